"""Energy terms no other test pins by value: golden values worked out by hand from the specs' formulas
and constants (atleus.md §4, hastily.md §4, flexisaga.md §4), never read back from the models."""

import dataclasses

import pytest

from hwmodels import estimate
from hwmodels.atleus import AtleusConfig
from hwmodels.flexisaga import FLEXISAGA  # the spec defaults, without fitted constants
from hwmodels.hastily import HASTILY  # the spec defaults, without fitted constants
from hwmodels.workload import Op, Workload

PJ = 1e-12
EXACT = AtleusConfig(t_dig_cycles=12)  # 12 cycles at 1.2 GHz = 10 ns: every Atleus time is a whole ns


def pj(expected):
    """pytest.approx of energies given in pJ (a number, list or dict), compared in joules. abs=0: pytest's
    default absolute tolerance, 1e-12, is a whole pJ and would hide a small change of a term."""
    if isinstance(expected, dict):
        return pytest.approx({k: v * PJ for k, v in expected.items()}, rel=1e-12, abs=0)
    if isinstance(expected, list):
        return pytest.approx([v * PJ for v in expected], rel=1e-12, abs=0)
    return pytest.approx(expected * PJ, rel=1e-12, abs=0)


# One Atleus layer: 16 tokens, d = 128, 2 heads of 64, d_ff = 512; stages by execution order (atleus.md §4.6)
A = "layers.0."
ATLEUS_LAYER = (
    Op("matmul", "addmm", A + "attn.q_proj", 1, 16, 128, 128, True),  # S1
    Op("matmul", "addmm", A + "attn.k_proj", 1, 16, 128, 128, True),  # S1
    Op("matmul", "addmm", A + "attn.v_proj", 1, 16, 128, 128, True),  # S1
    Op("matmul", "qk", A + "attn", 2, 16, 64, 16),  # S2, first dynamic product
    Op("softmax", "softmax", A + "attn", 2, 16, 0, 16),  # S2
    Op("matmul", "av", A + "attn", 2, 16, 16, 64),  # S2, last dynamic product
    Op("matmul", "addmm", A + "attn.o_proj", 1, 16, 128, 128, True),  # S3
    Op("norm", "layer_norm", A + "norm", 1, 16, 0, 128),  # S3
    Op("matmul", "addmm", A + "mlp.fc1", 1, 16, 128, 512, True),  # S4
    Op("gelu", "gelu", A + "mlp.act", 1, 16, 0, 512),  # S4
    Op("matmul", "addmm", A + "mlp.fc2", 1, 16, 512, 128, True),  # S4
)


def test_atleus_tsv_energy():
    # 4-bit weights and a 6-bit ADC, so that only the 8 input bits b_x (ATLEUS_RERAM) can give the bit count
    report = estimate(Workload(ATLEUS_LAYER), "atleus", config=EXACT, quant="M4F4", adc_bits=6)
    up = 16 * 128 * 8 * 0.03  # Q, K, V each: m·N = 2,048 values × 8 bits × 0.03 pJ/bit TSV (atleus.md §4.2, §4.3)
    down = 2 * 16 * 64 * 8 * 0.03  # A·V, the last S2 product, back to ReRAM: 2 heads × 16 × 64 values × 8 bits
    # Q·Kᵀ, softmax, the S3 O projection and the S4 FFN cross no tier
    assert [row.components.get("tsv", 0.0) for row in report.rows] == pj([up, up, up, 0, 0, down, 0, 0, 0, 0, 0])


def test_atleus_finetune_hbm_traffic():
    outside = Op("activation", "tanh", "pooler.activation", 1, 1, 0, 128)  # outside every block: not saved
    workload = Workload((*ATLEUS_LAYER, outside))
    # dX on the crossbars (backward_on="reram"): no weights streamed from HBM, only saved activations
    step = estimate(workload, "atleus", config=EXACT, mode="finetune", backward_on="reram")
    # saved activations (atleus.md §4.7): S1 outputs 3·16·128 = 6,144, softmax 2·16·16 = 512, GELU 16·512 = 8,192
    # (not the LayerNorm, the O projection or FFN outputs, nor ops outside the blocks): 14,848 values
    values = 3 * 16 * 128 + 2 * 16 * 16 + 16 * 512
    bits = 2 * values * 16  # written in the forward pass, read in the backward, BF16 (sa_dtype default): 475,136
    assert step.extra_components == pj({"hbm": bits * 3.9})  # 3.9 pJ/bit HBM2 (atleus.md §4.2)
    fp32 = estimate(workload, "atleus", config=EXACT, mode="finetune", backward_on="reram", sa_dtype="float32")
    assert fp32.extra_components == pj({"hbm": 2 * bits * 3.9})  # 32-bit values
    # time: 475,136 bits / 8 / 256 GB/s (one HBM2 stack) = 232 ns; at 128 GB/s 464 ns, 232 more
    slow = estimate(
        workload,
        "atleus",
        config=dataclasses.replace(EXACT, hbm_bytes_per_s=128e9),
        mode="finetune",
        backward_on="reram",
    )
    assert slow.total_cycles - step.total_cycles == 232
    assert estimate(workload, "atleus", config=EXACT).extra_components == {}  # inference saves nothing


def test_atleus_auto_replication():
    cfg = AtleusConfig(t_dig_cycles=12, reram_cores=1)  # 1 core × 16 tiles × 96 crossbars = 1,536
    # M8F8: 8-bit weights on 2-bit cells, 4 slices, ⌊128/4⌋ = 32 weights per crossbar: N_xb = ⌈K/128⌉·⌈N/32⌉
    ops = Workload(
        (
            Op("matmul", "addmm", A + "self_attn.q_proj", 1, 16, 512, 512, True),  # S1: 4·16 = 64 crossbars
            Op("matmul", "qk", A + "self_attn", 8, 16, 64, 16),
            # cross-attention over 64 encoder positions of width 1024, in S2: 8·16 = 128 crossbars each
            Op("matmul", "addmm", A + "encoder_attn.k_proj", 1, 64, 1024, 512, True),
            Op("matmul", "addmm", A + "encoder_attn.v_proj", 1, 64, 1024, 512, True),
            Op("matmul", "av", A + "encoder_attn", 8, 16, 64, 64),
            Op("matmul", "addmm", A + "fc1", 1, 16, 512, 2048, True),  # S4: 4·64 = 256 crossbars
        )
    )

    def reram_cycles(report):
        return [row.cycles for row in report.rows if row.unit == "reram"]

    # ρ = 1: S1 and S4 16·8·100 + 10 = 12,810 ns; the S2 products 64·800 + 10 = 51,210 ns, the slowest stage
    assert reram_cycles(estimate(ops, "atleus", config=cfg)) == [12_810, 51_210, 51_210, 12_810]
    auto = estimate(ops, "atleus", config=cfg, replication="auto")
    # used 64 + 2·128 + 256 = 576: S2 gets ρ = 1 + ⌊(1,536 − 576)/256⌋ = 4, so ⌈64/4⌉·800 + 10 = 12,810 ns
    assert reram_cycles(auto) == [12_810, 12_810, 12_810, 12_810]
    assert "crossbar replication per ReRAM stage: {1: 1, 2: 4, 3: 1, 4: 1}" in auto.notes
    # 4 tiles per core: 384 crossbars, fewer than the 576 used: no spare crossbars, ρ stays 1
    full = estimate(ops, "atleus", config=dataclasses.replace(cfg, tiles_per_core=4), replication="auto")
    assert reram_cycles(full) == [12_810, 51_210, 51_210, 12_810]


def test_atleus_lora_branches_and_backward():
    # rank 32 (the paper's); systolic tier: 16 cores of 128×32, BF16 0.5 pJ/MAC, SRAM 16 bits × 0.05 pJ/bit
    # (atleus.md §4.2, §4.4); cycles per core the least of OS/WS/IS, OS below
    v = Op("matmul", "addmm", A + "attn.v_proj", 1, 64, 256, 128, True)  # grouped-query V: 256 -> 128
    qkv = Op("matmul", "addmm", "layers.1.attn.c_attn", 1, 64, 128, 384, True)  # fused: Q, V slices of 128
    step = estimate(Workload((v, qkv)), "atleus", config=EXACT, lora_rank=32, mode="finetune")
    lora = [row for row in step.rows if row.name == "lora"]
    sram = 16 * 0.05  # pJ per value
    # v_proj, one branch, lone products split over 16 cores: (64×256)·(256×32), 2 columns a core: OS
    # 128 + 32 + 256 − 2 = 414 (WS 700, IS 1,152); (64×32)·(32×128), 8 columns: OS 190 (WS 350, IS 588)
    assert (lora[0].cycles, lora[0].operations) == (414 + 190, 64 * 32 * (256 + 128))
    v_pj = {
        "systolic_mac": (64 * 256 * 32 + 64 * 32 * 128) * 0.5,
        "systolic_sram": ((64 * 256 + 256 * 32 + 64 * 32) + (64 * 32 + 32 * 128 + 64 * 128)) * sram,
    }
    assert lora[0].components == pj(v_pj)
    # c_attn, two branches (batch 2, 8 cores each): (64×128)·(128×32), 4 columns a core: OS 286 (WS 350,
    # IS 580); (64×32)·(32×128), 16 columns: OS 190 (WS 350, IS 604); 2 instances on 16 cores: one round
    assert (lora[1].cycles, lora[1].operations) == (286 + 190, 2 * 64 * 32 * (128 + 128))
    qkv_pj = {
        "systolic_mac": 2 * (64 * 128 * 32 + 64 * 32 * 128) * 0.5,
        "systolic_sram": 2 * ((64 * 128 + 128 * 32 + 64 * 32) + (64 * 32 + 32 * 128 + 64 * 128)) * sram,
    }
    assert lora[1].components == pj(qkv_pj)
    # fine-tuning: LoRA backward at 2× the forward (atleus.md §4.7)
    back = [row for row in step.rows if row.name == "backward lora"]
    assert [(row.cycles, row.operations) for row in back] == [(2 * r.cycles, 2 * r.operations) for r in lora]
    assert back[0].components == pj({k: 2 * e for k, e in v_pj.items()})
    assert back[1].components == pj({k: 2 * e for k, e in qkv_pj.items()})


H = "encoder.layer.0."


def test_hastily_softmax_row_energy():
    op = Op("softmax", "softmax", H + "attention.self", 2, 3, 0, 4096)  # 2 heads × 3 rows of 4,096 scores
    # C = ⌈4096/(16 UCLMs · 64 columns)⌉ = 4 cores, l_c = 1,024, s = ⌈1024/64 lanes⌉ = 16 vector steps;
    # VFU cycles per core: s·(max, sub, mul, add 1 each + div 1) = 80, plus the LUT exp's s·(n/d 2 + shift 1) = 48
    # or the VFU exp's s·10 = 160 (hastily.md §4). 2.072 pJ a lookup (0.518 mW × 4 ns), 1.7 pJ a VFU cycle,
    # 6 pJ a bus transfer (Table II); the tree sends 2·(C − 1) = 6 transfers
    lut_row = {"uclm_lookup": 4096 * 0.518 * 4, "vfu": 4 * (80 + 48) * 1.7, "bus": 2 * 3 * 6.0}
    vfu_row = {"vfu": 4 * (80 + 160) * 1.7, "bus": 2 * 3 * 6.0}
    one_core = {"uclm_lookup": 4096 * 0.518 * 4, "vfu": 64 * (5 + 3) * 1.7}  # C = 1: 64 steps, no tree
    for options, per_row in (({}, lut_row), ({"exp": "vfu"}, vfu_row), ({"multicore_softmax": False}, one_core)):
        (row,) = estimate(Workload((op,)), "hastily", config=HASTILY, **options).rows
        assert row.components == pj({k: 6 * e for k, e in per_row.items()})  # every row of every head


def test_hastily_vector_and_move_energy():
    ops = (
        Op("matmul", "addmm", H + "intermediate.dense", 1, 128, 768, 3072, True),  # its rows sit on 36 cores
        Op("norm", "layer_norm", H + "output.LayerNorm", 1, 128, 0, 768),
        Op("gelu", "gelu", H + "intermediate.act", 1, 128, 0, 3072),
        Op("activation", "silu", H + "act", 2, 8, 0, 100),
        Op("elementwise", "add", H + "attention.self", 12, 4, 0, 130),
        Op("move", "cat", H + "cat", 1, 5, 0, 200),
    )
    rows = estimate(Workload(ops), "hastily", config=HASTILY, pipelining=False).rows
    # per row ⌈n/64 lanes⌉ steps × cycles per lane × 1.7 pJ per VFU cycle, times all rows (heads included):
    # LayerNorm 8 ops (hastily.md §4), GELU 14, other activations exp_vfu_cycles = 10, element-wise 1; the
    # cores the rows sit on (36 after the product) change the time only
    assert [row.components for row in rows[1:5]] == [
        pj({"vfu": 128 * 12 * 8 * 1.7}),
        pj({"vfu": 128 * 48 * 14 * 1.7}),
        pj({"vfu": 2 * 8 * 2 * 10 * 1.7}),
        pj({"vfu": 12 * 4 * 3 * 1 * 1.7}),
    ]
    # data movement: ⌈200/64 bytes⌉ = 4 bus transfers per row, 6 pJ each plus a 25.35 pJ shared-memory access
    assert rows[5].components == pj({"bus": 5 * 4 * 6.0, "shared_memory": 5 * 4 * 25.35})


def test_hastily_kv_write_energy():
    av = Op("matmul", "av", H + "attention.self", 12, 128, 128, 64)  # V: 128 × 64 per head
    qk = Op("matmul", "qk", H + "attention.self", 12, 128, 64, 200)  # Kᵀ: 64 × 200 per head
    static = Op("matmul", "addmm", H + "attention.self.query", 1, 128, 64, 64, True)
    rows = estimate(Workload((static, qk, av)), "hastily", config=HASTILY, pipelining=False).rows
    # each of the K rows of W written once per bit-plane array (8 per UCLM, HASTILY_SRAM) in each of the
    # Q = ⌈N/64⌉ column blocks, 3.2 pJ per 64-bit row (hastily.md §4): Kᵀ Q = 4, V Q = 1
    assert [row.components.get("kv_write", 0.0) for row in rows] == pj(
        [0, 12 * 64 * 4 * 8 * 3.2, 12 * 128 * 1 * 8 * 3.2]
    )
    # V is written in min(128, 64) = 64 row cycles; per row P = 2 MVMs (375) + ⌈1·1 add / 1 core⌉ = 376
    assert rows[2].cycles == 64 + 128 * 376


def test_hastily_dram_spill_energy():
    # 8 · 2048 · 2048 INT8 scores are exactly the 32 MiB of shared memory (128 tiles × 256 KB): no spill
    exact = Op("softmax", "softmax", H, 8, 2048, 0, 2048)
    (fits,) = estimate(Workload((exact,)), "hastily", config=HASTILY, pipelining=False).rows
    assert "dram" not in fits.components
    big = Op("softmax", "softmax", H, 1, 5793, 0, 5793)  # 33,558,849 bytes > 33,554,432
    (spill,) = estimate(Workload((big,)), "hastily", config=HASTILY, pipelining=False).rows
    # written out and read back: 67,117,698 bytes at 20 pJ/bit (DDR4-class, hastily.md §4)
    assert spill.components["dram"] == pj(2 * 5793 * 5793 * 8 * 20.0)
    # and ⌈67,117,698 B / 25.6 GB/s⌉ = ⌈2,621,785.08 ns⌉ = 2,621,786 cycles at 1 GHz more than in the pipeline
    (kept,) = estimate(Workload((big,)), "hastily", config=HASTILY).rows
    assert spill.cycles - kept.cycles == 2_621_786


def test_flexisaga_metadata_and_sparse_energy():
    # 16×8 array (R = 16 along K, C = 8 along N), a 32×64 · 64×48 product pruned at s = 0.5 (η = 1, spec
    # default), forced dataflows; 4.6 pJ per fp32 MAC, 3 RF accesses of 0.5 pJ, SRAM 5 pJ and DRAM 640 pJ
    # per 32-bit word, 0.1 pJ per decoded element (flexisaga.md §4.5)
    fc = Op("matmul", "addmm", "layers.0.mlp.fc1", 1, 32, 64, 48, True)
    options = {"config": FLEXISAGA, "tile": (16, 8), "sparsity": 0.5}

    def energy(macs, sram, dram, decoded):
        return pj({"mac": macs * 4.6, "register_file": macs * 3 * 0.5, "sram": sram * 5.0, "dram": dram * 640.0,
                   "decoder": decoded * 0.1})  # fmt: skip

    # sOS, row vectors: K_nz = 64 − ⌊0.5·64⌋ = 32 in each of ⌈48/8⌉ = 6 column tiles, nnz = 32·48 = 1,536;
    # 32 × 6·32·8 = 49,152 MACs executed (dense: 98,304); metadata (row mode, §4.4):
    # ⌈64/16⌉·⌈48/8⌉·R + C·ΣK_nz = 384 + 1,536 = 1,920 bits = 60 words, with each of ⌈32/16⌉ = 2 weight streams
    (row,) = estimate(Workload((fc,)), "flexisaga", vector="row", dataflow="sos", **options).rows
    assert (row.name, row.cycles, row.operations) == ("addmm [sos]", 2 * 6 * (16 + 8 - 2 + 32), 49_152)
    w_words = 1536 + 60
    # SRAM: X of the kept k only, M·ΣK_nz = 6,144, + 2 streams of weight words + Y, M·N = 1,536;
    # DRAM: X, M·K = 2,048, + the weight words once + Y; decoded: 1,536 kept (k, n) steps × 2 streams
    assert row.components == energy(49_152, 6144 + 2 * w_words + 1536, 2048 + w_words + 1536, 1536 * 2)
    # metadata=False loads the 1,536 nonzero weights alone; decoder=False drops the DecU term (flexisaga.md §5)
    (bare,) = estimate(Workload((fc,)), "flexisaga", vector="row", dataflow="sos", metadata=False, **options).rows
    assert bare.components == energy(49_152, 6144 + 2 * 1536 + 1536, 2048 + 1536 + 1536, 1536 * 2)
    (bare,) = estimate(Workload((fc,)), "flexisaga", vector="row", dataflow="sos", decoder=False, **options).rows
    assert bare.components == {k: e for k, e in row.components.items() if k != "decoder"}

    # sIS, column vectors: N_nz = 48 − 24 = 24 in each of ⌈64/16⌉ = 4 row tiles, nnz = 24·64 = 1,536;
    # 32 × 4·24·16 = 49,152 MACs; metadata (column mode): ⌈64/16⌉·⌈48/8⌉·C + R·ΣN_nz = 192 + 1,536
    # = 1,728 bits = 54 words, with each of ⌈32/8⌉ = 4 weight streams
    (row,) = estimate(Workload((fc,)), "flexisaga", vector="col", dataflow="sis", **options).rows
    assert (row.name, row.cycles, row.operations) == ("addmm [sis]", 4 * 4 * (24 + 16 + 16 + 8 - 2), 49_152)
    w_words = 1536 + 54
    # SRAM: X, K·M = 2,048, + partial sums M·N·(⌈K/R⌉ − 1) = 4,608 + 4 streams + stores M·N·⌈K/R⌉ = 6,144
    assert row.components == energy(49_152, 2048 + 4608 + 4 * w_words + 6144, 2048 + w_words + 1536, 1536 * 4)
