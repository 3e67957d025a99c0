"""Cycle terms no other test pins by value: golden cycle counts worked out by hand from the specs' formulas
(softex.md §6.3, hastily.md §4, atleus.md §4, flexisaga.md §4), never read back from the models. Every
constant a formula multiplies by is set away from 1 somewhere below, every ceiling is exercised on a
fraction, and every schedule term (pipeline fill, batch overlap, ops outside the blocks) is non-zero."""

import dataclasses

import torch

from hwmodels import estimate, hardware
from hwmodels.atleus import AtleusConfig
from hwmodels.config import fitted_config
from hwmodels.flexisaga import FLEXISAGA, FlexiSAGACost, auto_cycles  # FLEXISAGA: the spec defaults
from hwmodels.hastily import HASTILY  # the spec defaults, without fitted constants
from hwmodels.softex import SOFTEX  # the spec defaults, without fitted constants
from hwmodels.systolic import SparsePattern, gemm_cycles, sparse_gemm_cycles
from hwmodels.workload import Op, Workload


def cycles(report):
    return [row.cycles for row in report.rows]


# ----------------------------------------------------------------------------------------------- SoftEx


def test_softex_batch_contention_and_per_mode_ceilings():
    cfg = dataclasses.replace(SOFTEX, l1_contention=1.25, gelu_job_cycles=22)
    ops = (
        Op("matmul", "mm", "", 3, 2, 10, 10),
        Op("softmax", "softmax", "", 1, 2, 0, 20),
        Op("gelu", "gelu", "", 1, 1, 0, 21),
    )
    report = estimate(Workload(ops), "softex", config=cfg)
    # softex.md §6.3 MatMul: batch·⌈M·K·N/(192·u)⌉ = 3·⌈200/172.8⌉ = 3·2 = 6, × l1_contention 1.25 = 7.5 → 8
    # (one ⌈·⌉ per product: ⌈3·200/172.8⌉ = 4 would give 5)
    matmul = 8
    # softmax: job 3·⌈20/8⌉ + 41 = 50 ≥ c_prog, no idle: SoftEx busy 2 rows·50 = 100, × 1.25 = 125,
    # plus the first job's programming wait of 30 (the cores write registers: no L1 contention) = 155
    softmax = 155
    # GELU: SoftEx N⌈n/V⌉ + c_job_gelu = 4·⌈21/8⌉ + 22 = 34, × 1.25 = 42.5 → 43; cores n·c_gelu_core/8 =
    # 21·4/8 = 10.5 → 11; each mode rounded up on its own: 54 (not ⌈42.5 + 10.5⌉ = 53)
    gelu = 43 + 11
    assert cycles(report) == [matmul, softmax, gelu]
    assert report.total_cycles == matmul + softmax + gelu


def test_softex_short_softmax_jobs_wait_for_programming():
    cfg = dataclasses.replace(SOFTEX, prog_cycles=60)
    rows = Op("softmax", "softmax", "", 2, 2, 0, 8)  # 2 instances × 2 rows = 4 jobs
    empty = Op("softmax", "softmax", "", 2, 0, 0, 8)  # no rows: no job, no programming
    report = estimate(Workload((rows, empty)), "softex", config=cfg)
    # softex.md §6.3: job 3·⌈8/8⌉ + 41 = 44 < c_prog = 60, so SoftEx idles 16 cycles between jobs:
    # rows·job + c_prog + (rows − 1)·(c_prog − job) = 4·44 + 60 + 3·16 = 284
    assert cycles(report) == [4 * 44 + 60 + 3 * 16, 0]


def test_softex_software_baseline_ignores_the_instance():
    ops = (
        Op("softmax", "softmax", "", 1, 1, 0, 10),
        Op("gelu", "gelu", "", 1, 1, 0, 10),
        Op("activation", "silu", "", 1, 1, 0, 13),
        Op("move", "cat", "", 1, 1, 0, 13),
    )
    report = estimate(Workload(ops), "softex", config=SOFTEX, softex=False, lanes=16, gelu_terms=2)
    # softex.md §6.3 software baseline, at the reference V_ref = 8, N_ref = 4 whatever the instance:
    # softmax 10 elements × 10.8·3/8 = 40.5 → 41; GELU 10 × 5.11·(4/8 + 4/8) = 51.1 → 52;
    # activations and data movement on the cores: n·c_core_op/8 = 13·2/8 = 3.25 → 4
    assert cycles(report) == [41, 52, 4, 4]
    # with SoftEx the activation and the move stay on the cores at the same cost
    assert cycles(estimate(Workload(ops[2:]), "softex", config=SOFTEX)) == [4, 4]


# ----------------------------------------------------------------------------------------------- HASTILY

H = "encoder.layer.0."
# constants away from their defaults, so that a dropped or swapped factor shows
HASTILY_ODD = dataclasses.replace(HASTILY, vfu_op_cycles=2, nd_cycles=3, div_cycles=5, lookup_cycles=7, kv_row_cycles=3)
LINEAR = Op("matmul", "addmm", H + "attention.self.query", 1, 128, 768, 768, True)


def test_hastily_product_adds_and_operand_writes():
    short_k = Op("matmul", "qk", H + "attention.self", 2, 5, 40, 64)  # Kᵀ of 40 rows: fewer than the 64 array rows
    long_k = Op("matmul", "av", H + "attention.self", 2, 5, 100, 64)  # V of 100 rows: two row blocks
    narrow = Op("matmul", "addmm", H + "attention.self.key", 1, 2, 768, 100, True)
    ops = (LINEAR, short_k, long_k, narrow)
    report = estimate(Workload(ops), "hastily", config=HASTILY_ODD, pipelining=False)
    # hastily.md §4 product: T_row = T_MVM + ⌈(P − 1)·⌈N/W⌉ / ⌈P·Q/16⌉⌉·c_op; 768 × 768: P = Q = 12 on 9 cores,
    # 11·12 = 132 adds → 375 + ⌈132/9⌉·2 = 405 per row, 128 rows
    # dynamic W: min(K, 64)·kv_row_cycles written first, then one MVM per row (the heads in parallel):
    # K = 40: 40·3 + 5·375 = 1,995; K = 100: P = 2 on 1 core, 1·⌈64/64⌉ = 1 add → 377 per row, 64·3 + 5·377 = 2,077
    # 768 × 100: P = 12, Q = ⌈100/64⌉ = 2, 24 UCLMs on ⌈24/16⌉ = 2 cores; 11·⌈100/64⌉ = 22 adds → 375 + ⌈22/2⌉·2
    assert cycles(report) == [128 * 405, 40 * 3 + 5 * 375, 64 * 3 + 5 * 377, 2 * 397]


def test_hastily_sar_mvm_time_rounds_up():
    op = Op("matmul", "addmm", H + "attention.self.query", 1, 2, 64, 64, True)  # one UCLM, no adds
    # hastily.md §4 ADC width: T_MVM = ⌈375·b/6⌉: 5 bits 312.5 → 313, 7 bits 437.5 → 438 (the table's values)
    for bits, mvm in ((5, 313), (7, 438)):
        report = estimate(Workload((op,)), "hastily", config=HASTILY, pipelining=False, adc_bits=bits)
        assert cycles(report) == [2 * mvm]


def test_hastily_softmax_row_terms():
    def per_row(length, cfg, **options):
        op = Op("softmax", "softmax", H + "attention.self", 2, 3, 0, length)  # 2 heads in parallel, 3 rows each
        (row,) = estimate(Workload((op,)), "hastily", config=cfg, pipelining=False, **options).rows
        assert row.cycles % 3 == 0
        return row.cycles // 3

    # hastily.md §4 softmax row, l = 1,921: C = ⌈1921/1024⌉ = 2, l_c = ⌈960.5⌉ = 961, s = ⌈961/64⌉ = 16;
    # VFU s·(4·c_op + c_div) = 16·(8 + 5) = 208; LUT exp s·(c_nd + c_op) = 16·5 = 80 and
    # lookup_cycles·⌈961/128⌉ = 7·8 = 56; tree 2·t_1 = 2·16 = 32 (one intra-tile level)
    assert per_row(1921, HASTILY_ODD) == 208 + 80 + 56 + 32
    # VFU exp: s·c_exp = 16·10 = 160 instead of the LUT's 80 + 56
    assert per_row(1921, HASTILY_ODD, exp="vfu") == 208 + 160 + 32
    # l = 3,000: C = 3 cores, l_c = 1,000, s = 16: 16·5 + 16·3 + 4·⌈1000/128⌉ = 160; ⌈log2 3⌉ = 2 levels: 2·(16 + 16)
    assert per_row(3000, HASTILY) == 80 + 48 + 32 + 64
    # PUMA baseline (exp="vfu", one core): l = 4,096, s = 64: 64·5 + 64·10 = 960, no tree
    assert per_row(4096, HASTILY, exp="vfu", multicore_softmax=False) == 960


def test_hastily_vector_and_move_rows():
    act = Op("activation", "silu", H + "act", 1, 3, 0, 768)
    move = Op("move", "cat", H + "cat", 1, 5, 0, 200)
    ops = (
        Op("norm", "layer_norm", H + "output.LayerNorm", 1, 3, 0, 100),
        Op("gelu", "gelu", H + "intermediate.act", 1, 3, 0, 100),
        Op("activation", "silu", H + "act", 2, 3, 0, 100),
        Op("elementwise", "add", H + "attention.self", 4, 3, 0, 130),
        move,
        LINEAR,
        act,
        move,
    )
    report = estimate(Workload(ops), "hastily", config=HASTILY_ODD, pipelining=False)
    # hastily.md §4, per row of n on one core (no product before): ⌈n/64⌉ steps × cycles per lane, m rows
    # (instances in parallel): LayerNorm 8·c_op = 16 → 2·16·3; GELU 14 → 2·14·3; other activations
    # c_exp = 10 → 2·10·3; element-wise c_op = 2 → 3·2·3; data movement ⌈200/64⌉ = 4 bus transfers per row → 4·5
    before = [2 * 16 * 3, 2 * 14 * 3, 2 * 10 * 3, 3 * 2 * 3, 4 * 5]
    # after the 768 × 768 product (405 per row, on 9 cores): the activation's 12 steps spread over 9 cores,
    # ⌈12/9⌉·10 = 20 per row; the bus transfers are not spread: still 4 per row
    after = [128 * 405, 2 * 10 * 3, 4 * 5]
    assert cycles(report) == before + after


def test_hastily_pipeline_stage_includes_the_operand_write():
    static = Op("matmul", "addmm", H + "attention.self.query", 1, 8, 64, 64, True)  # 375 per row
    dynamic = Op("matmul", "av", H + "attention.self", 2, 8, 100, 64)  # 377 per row, V written first
    report = estimate(Workload((static, dynamic)), "hastily", config=HASTILY_ODD)
    # hastily.md §4: a dynamic W adds kv_row_cycles per token to its stage: T_stage = 377 + 3 = 380;
    # (N + 1)·l·T_stage = 2·8·380 = 6,080 < 8·375 + 64·3 + 8·377 = 6,208 in sequence
    assert report.total_cycles == 2 * 8 * 380


def test_hastily_pipeline_batch_layers_and_outside_ops():
    ops = [
        Op("move", "embedding", "embeddings.word_embeddings", 1, 12, 0, 64),  # outside the blocks
        Op("matmul", "addmm", "embeddings.projection", 1, 24, 64, 64, True),  # outside the blocks, 24 rows
    ]
    for layer in (0, 1):
        ops += [
            Op("matmul", "addmm", f"encoder.layer.{layer}.attention.self.{x}", 1, 12, 64, 64, True)
            for x in ("query", "key", "value")
        ]
    report = estimate(Workload(ops, batch=3), "hastily", config=HASTILY)
    # hastily.md §4 schedule: b = 3 sequences of l = 12/3 = 4 tokens (the static products inside the blocks),
    # N = 2 blocks, T_stage = 375 (one MVM): ⌈3/2⌉·(2 + min(3, 2))·4·375 = 12,000, plus in sequence the ops outside:
    # the embedding's 12 rows × ⌈64/64⌉ = 12 bus cycles and the projection's 24·375 = 9,000;
    # below the 12 + 9,000 + 6·12·375 = 36,012 of all ops in sequence
    assert report.total_cycles == 2 * 4 * 4 * 375 + 12 + 24 * 375


def test_hastily_pipeline_without_static_products():
    # softmax rows of 64 (hastily.md §4): 1 step: 5 VFU + 3 LUT + 4·⌈64/128⌉ lookup = 12 cycles per row
    def softmaxes(m):
        return [Op("softmax", "softmax", H + f"attention.{i}", 1, m, 0, 64) for i in range(3)]

    # no static product in the block: l is the longest op's rows; b = 1: (1 + 1)·5·12 = 120 < 3·5·12
    assert estimate(Workload(softmaxes(5)), "hastily", config=HASTILY).total_cycles == 2 * 5 * 12
    # b = 2 sequences of 10/2 = 5 rows: ⌈2/2⌉·(1 + 2)·5·12 = 180 < 3·10·12
    assert estimate(Workload(softmaxes(10), batch=2), "hastily", config=HASTILY).total_cycles == 3 * 5 * 12


# ----------------------------------------------------------------------------------------------- Atleus

EXACT = AtleusConfig(t_dig_cycles=12)  # 12 cycles at 1.2 GHz = 10 ns: a crossbar token is 8·100 + 10 = 810 ns


def atleus_layer(layer, tokens, heads_x_seqs, seq):
    """One block of width 128 (2 heads of 64), d_ff = 512, by execution order (atleus.md §4.6): S1 Q/K/V,
    S2 Q·Kᵀ/softmax/A·V, S3 O projection + LayerNorm, S4 FFN."""
    s = f"layers.{layer}."
    return [
        *(Op("matmul", "addmm", s + f"attn.{x}_proj", 1, tokens, 128, 128, True) for x in "qkv"),
        Op("matmul", "qk", s + "attn", heads_x_seqs, seq, 64, seq),
        Op("softmax", "softmax", s + "attn", heads_x_seqs, seq, 0, seq),
        Op("matmul", "av", s + "attn", heads_x_seqs, seq, seq, 64),
        Op("matmul", "addmm", s + "attn.o_proj", 1, tokens, 128, 128, True),
        Op("norm", "layer_norm", s + "norm", 1, tokens, 0, 128),
        Op("matmul", "addmm", s + "mlp.fc1", 1, tokens, 128, 512, True),
        Op("gelu", "gelu", s + "mlp.act", 1, tokens, 0, 512),
        Op("matmul", "addmm", s + "mlp.fc2", 1, tokens, 512, 128, True),
    ]


def test_atleus_s1_projections_run_in_parallel():
    ops = atleus_layer(0, 16, 2, 16)[:3] + [atleus_layer(0, 16, 2, 16)[i] for i in (3, 5)]  # Q, K, V, Q·Kᵀ, A·V
    report = estimate(Workload(ops), "atleus", config=EXACT)
    # atleus.md §4.3: each projection 16 tokens·8·100 + 10 = 12,810 ns
    # §4.4, 2 heads on 8 cores each (⌈16/8⌉ = 2 and ⌈64/8⌉ = 8 columns per core), least of OS/WS/IS on 128×32:
    # Q·Kᵀ OS 1·1·(158 + 64) = 222 (WS 302, IS 288); A·V OS 1·1·(158 + 16) = 174 (WS 302, IS 294)
    assert cycles(report) == [12_810, 12_810, 12_810, 222, 174]
    # §4.6: S1's three products read the same input in parallel (max 12,810) and send their outputs in parallel:
    # 128·8 bits = 8 flits + 2 hops·(3 + 1) + 1 TSV = 17 ns once; S2 = 222 + 174 + A·V's 2·64·8 bits back, 17 ns.
    # B = 1, L = 1: (4 + 1 − 1)·12,827 exceeds 12,827 + 413 in sequence
    assert report.total_cycles == 12_810 + 17 + 222 + 174 + 17


def test_atleus_pipeline_two_layers_two_sequences_and_outside_ops():
    ops = [Op("move", "embedding", "embeddings.word_embeddings", 1, 16, 0, 128)]
    ops += atleus_layer(0, 16, 4, 8) + atleus_layer(1, 16, 4, 8)  # 2 sequences of 8 tokens, 2 heads each
    ops.append(Op("matmul", "addmm", "pooler.dense", 1, 2, 128, 128, True))  # a head, outside the blocks
    report = estimate(Workload(ops, batch=2), "atleus", config=EXACT)
    # atleus.md §4.6 per layer (ns for both sequences; the transfers are one token latency per sequence, × B = 2):
    # S1: 12,810 ‖ 3 parallel transfers 2·(8 + 8 + 1) = 34                                         → 12,844
    # S2: Q·Kᵀ 4 instances on 4 cores each, 2 columns per core: OS 222; softmax 4·8·8·8/(32·16) = 4;
    #     A·V 16 columns per core: OS 166; back over the TSVs 4·64·8 bits = 16 flits + 9 → 2·25 = 50  → 442
    # S3: O projection 12,810 + 2·(8 + 8) = 32; LayerNorm 16·128·8/512 = 32                        → 12,874
    # S4: fc1 12,810 + 2·(32 flits + 8) = 80; GELU 16·512·8/512 = 128; fc2 chained: one token latency per
    #     sequence 2·810 = 1,620, + 2·(8 + 8) = 32                                                  → 14,670
    # per sequence (÷ B): 6,422, 221, 6,437, 7,335. Pipelined: (L·max(B, 4) + min(B, 4) − 1)·max T_Si =
    # (2·4 + 2 − 1)·7,335 = 66,015, below B·Σ T_Si = 2·2·20,415 = 81,660
    pipeline = 9 * 7_335
    # outside, unpipelined (§4.4): the embedding move 16·128/512 = 4; the pooler on the systolic tier, 16 cores of
    # 8 columns: OS 1·1·(158 + 128) = 286 (WS 288, IS 294), + its 128·128·16 bits from HBM at 256 GB/s = 128 ns
    outside = 4 + 286 + 128
    assert report.rows[-1].cycles == 286 + 128
    assert report.total_cycles == pipeline + outside
    # without pipelining, B·Σ T_Si over both layers
    assert estimate(Workload(ops, batch=2), "atleus", config=EXACT, pipelining=False).total_cycles == 81_660 + outside


def finetune_layer():
    q, _, _, qk, softmax, av = atleus_layer(0, 16, 2, 16)[:6]
    fc1 = Op("matmul", "addmm", "layers.0.mlp.fc1", 1, 16, 128, 256, True)
    return Workload((q, qk, softmax, av, fc1, Op("gelu", "gelu", "layers.0.mlp.act", 1, 16, 0, 256)))


def test_atleus_finetune_backward_terms():
    ops = finetune_layer()
    step = estimate(ops, "atleus", config=EXACT, mode="finetune")
    # atleus.md §4.7, forward: Q 12,810; Q·Kᵀ 222, softmax 2·16·16·8/512 = 8, A·V 174 (as above); fc1 12,810;
    # GELU 16·256·8/512 = 64. Backward: dX = dY·Wᵀ, a (16×N)·(N×K) product on the systolic tier (default), split
    # over 16 cores, with Wᵀ from HBM: Q (N = K = 128) 8 columns a core, OS 1·1·(158 + 128) = 286, + 128·128·16 bits
    # at 256 GB/s = 128 ns → 414; fc1 (N = 256, K = 128) OS 1·1·(158 + 256) = 414 (WS 604, IS 588), + 256·128·16
    # bits = 256 ns → 670. Q·Kᵀ, A·V and softmax at 2×, GELU at 1×
    assert cycles(step) == [12_810, 414, 222, 444, 8, 16, 174, 348, 12_810, 670, 64, 64]
    # forward stages: S1 12,810 + 17, S2 222 + 8 + 174 + 17, S4 12,810 + 256·8/128 = 16 flits + 8 + 64:
    # 26,146 in sequence (below 4·12,898); backward: S1 414, S2 444 + 16 + 348, S4 670 + 64: 1,956 (below 4·808);
    # saved activations (Q 16·128, softmax 2·16·16, GELU 16·256: 6,656 values) written and read back at 16 bits:
    # 212,992 bits at 256 GB/s = 104 ns
    forward, saved = 12_827 + 421 + 12_898, 104
    assert step.total_cycles == forward + 1_956 + saved
    on_reram = estimate(ops, "atleus", config=EXACT, mode="finetune", backward_on="reram")
    # transposed reads at forward cost: each dX 12,810 ns, alone in its backward stage (no token latency)
    assert [cycles(on_reram)[i] for i in (1, 9)] == [12_810, 12_810]
    # backward: S1 12,810, S2 808, S4 12,810 + 64: 26,492 in sequence (below 4·12,874)
    assert on_reram.total_cycles == forward + 26_492 + saved


def test_atleus_backward_reads_chain_like_the_forward_ones():
    ffn = [Op("matmul", "addmm", f"layers.0.mlp.fc{i}", 1, 16, 128, 128, True) for i in (1, 2)]
    step = estimate(Workload(ffn), "atleus", config=EXACT, mode="finetune", backward_on="reram")
    # atleus.md §4.6/§4.7, a block without dynamic products is all S4: forward fc1 12,810 + its transfer 8 flits + 8,
    # fc2 chained: one token latency 810 + 16. Backward: the transposed reads chain the same way, 12,810 + 810;
    # no saved activations (no S1 product, no softmax or activation)
    assert step.total_cycles == (12_810 + 16 + 810 + 16) + (12_810 + 810)


def test_atleus_lora_runs_in_stage_2():
    ops = [
        Op("matmul", "addmm", "layers.0.attn.q_proj", 1, 16, 128, 128, True),
        Op("matmul", "qk", "layers.0.attn", 8, 4, 64, 4),
        Op("matmul", "av", "layers.0.attn", 8, 4, 4, 64),
        Op("matmul", "addmm", "layers.0.mlp.fc1", 1, 16, 128, 128, True),
    ]
    report = estimate(Workload(ops, batch=4), "atleus", config=EXACT, lora_rank=32)
    # atleus.md §4.4 LoRA of q_proj: (16×128)·(128×32) over 16 cores, 2 columns a core: OS 286 (WS 302, IS 288);
    # (16×32)·(32×128), 8 columns: OS 190 (WS 302, IS 294)
    assert [row.cycles for row in report.rows if row.name == "lora"] == [286 + 190]
    # §4.6, 4 sequences of 4 tokens (transfers × B = 4): S1 12,810 + 4·(8 flits + 8 + 1) = 12,878;
    # S2 Q·Kᵀ 8 instances on 2 cores each, OS 222 (WS 290, IS 288); A·V 32 columns a core, OS 162 (WS 290, IS 318);
    # A·V back 8·64·8 bits = 32 flits + 9 = 41, × 4; the LoRA 476: 1,024; S4 12,810 + 4·16 = 12,874.
    # Per sequence 3,219.5, 256, 3,218.5: (1·4 + 4 − 1)·3,219.5 = 22,536.5 (below 4·6,694 in sequence) → 22,537
    assert report.total_cycles == 22_537


def test_atleus_systolic_only_streams_weights():
    fc1 = Op("matmul", "addmm", "layers.0.mlp.fc1", 1, 16, 128, 256, True)
    # atleus.md §4.4: the static product on the systolic tier, 16 columns a core: OS 1·1·(158 + 128) = 286
    # (WS 302, IS 302), + 128·256·16 bits of weights from HBM = 256 ns → 542; a block without dynamic products is
    # all S4
    inference = estimate(Workload((fc1,)), "atleus", config=EXACT, mapping="systolic_only")
    assert (cycles(inference), inference.total_cycles) == ([542], 542)
    # §4.7: its backward at 1× (a static product), no saved activations (no S1 product on ReRAM)
    step = estimate(Workload((fc1,)), "atleus", config=EXACT, mapping="systolic_only", mode="finetune")
    assert (cycles(step), step.total_cycles) == ([542, 542], 1_084)


def test_atleus_systolic_dataflow_choice():
    ops = (
        Op("matmul", "qk", "", 16, 16, 128, 64),  # one instance per core
        Op("matmul", "qk", "", 16, 256, 128, 32),
        Op("matmul", "qk", "", 1, 16, 64, 520),  # a lone product split over the 16 cores
    )
    # atleus.md §4.4, least of the three on 128×32: (16×128)·(128×64): OS 1·2·(158 + 128) = 572, WS 1·2·(286 + 16)
    # = 604, IS 1·1·(286 + 64) = 350; (256×128)·(128×32): OS 2·1·286 = 572, WS 1·1·(286 + 256) = 542, IS 1·8·318;
    # (16×64)·(64×520) split by columns: ⌈520/16⌉ = 33 a core: OS 1·2·(158 + 64) = 444, WS 1·2·(286 + 16) = 604,
    # IS 1·1·(286 + 33) = 319
    assert cycles(estimate(Workload(ops), "atleus", config=EXACT)) == [350, 542, 319]


def test_atleus_replication_and_flit_ceilings():
    q = Op("matmul", "addmm", "layers.0.mlp.fc1", 1, 16, 128, 100, True)  # 100 outputs: 800 bits per token
    report = estimate(Workload((q,)), "atleus", config=EXACT, replication=3)
    # atleus.md §4.3: ⌈16/3⌉ = 6 tokens in turn: 6·800 + 10 = 4,810; §4.6 transfer ⌈800/128⌉ = 7 flits + 8
    assert (cycles(report), report.total_cycles) == ([4_810], 4_810 + 15)


def test_atleus_systolic_rounds_and_vector_ceilings():
    ops = (
        Op("matmul", "qk", "", 20, 16, 64, 16),  # 20 instances on 16 cores: two rounds
        Op("elementwise", "add", "", 1, 3, 0, 100),
        Op("softmax", "softmax", "", 1, 3, 0, 100),
        Op("move", "cat", "", 1, 3, 0, 100),
    )
    report = estimate(Workload(ops), "atleus", config=EXACT)
    # atleus.md §4.4: one instance per core, OS 1·1·(158 + 64) = 222 (WS, IS 302), × ⌈20/16⌉ = 2;
    # element-wise and moves 1 op per element: ⌈300/512⌉ = 1; softmax 8: ⌈2,400/512⌉ = 5
    assert cycles(report) == [444, 1, 5, 1]
    assert report.total_cycles == 451  # outside the blocks: in sequence


def test_atleus_clocks():
    cfg = dataclasses.replace(EXACT, sa_freq_hz=0.5e9, noc_freq_hz=0.5e9)
    q = Op("matmul", "addmm", "layers.0.attn.q_proj", 1, 128, 768, 768, True)
    softmax = Op("softmax", "softmax", "", 12, 128, 0, 128)
    product = Op("matmul", "qk", "", 16, 16, 128, 64)  # IS 350 cycles (test_atleus_systolic_dataflow_choice)
    report = estimate(Workload((q, softmax, product)), "atleus", config=cfg)
    # atleus.md §4.1: times in ns, reported in cycles of the systolic clock, here 2 ns:
    # Q 128·800 + 10 = 102,410 ns = 51,205 cycles; softmax 196,608·8/512 = 3,072 cycles = 6,144 ns
    # the product 350 cycles = 700 ns
    assert cycles(report) == [51_205, 3_072, 350]
    # Q alone in its block (S4): + 768·8/128 = 48 flits + 8 = 56 NoC cycles of 2 ns; total 109,366 ns
    assert report.total_cycles == (102_410 + 112 + 6_144 + 700) // 2


# ----------------------------------------------------------------------------------------------- FlexiSAGA and
# the systolic array

ALPHA5 = FlexiSAGACost(fold_overhead=5)  # α = 5 instead of R + C − 2 (not the fitted 2)


def test_systolic_fold_overhead_replaces_skew_and_drain():
    # flexisaga.md §4.1 with α: OS folds α + K, WS R + α + M, IS R + α + N; M = 20, K = 40, N = 24 on 16×8
    # OS ⌈20/16⌉·⌈24/8⌉·(5 + 40) = 270; WS ⌈40/16⌉·⌈24/8⌉·(16 + 5 + 20) = 369; IS ⌈40/16⌉·⌈20/8⌉·(16 + 5 + 24) = 405
    assert [gemm_cycles(20, 40, 24, 16, 8, d, fold_overhead=5) for d in ("os", "ws", "is")] == [270, 369, 405]
    assert [gemm_cycles(20, 40, 24, 16, 8, d, fold_overhead=0) for d in ("os", "ws", "is")] == [240, 324, 360]
    # §4.2 with α: "row" keeps 40 − 20 = 20 rows in each of 3 column tiles, "col" 24 − 12 = 12 columns in each of
    # 3 row tiles. sOS ⌈M/R⌉·Σ(α + K_nz), sWS Σ⌈K_nz/R⌉·(R + α + M), sIS ⌈M/C⌉·Σ(R + α + N_nz), csOS as sOS
    row = SparsePattern.uniform(40, 24, 16, 8, 0.5, "row")
    col = SparsePattern.uniform(40, 24, 16, 8, 0.5, "col")
    flows = ("sos", "sws", "sis", "csos")
    assert [sparse_gemm_cycles(20, row, d, fold_overhead=5) for d in flows] == [
        2 * 3 * (5 + 20),
        3 * 2 * (16 + 5 + 20),
        3 * 3 * (16 + 5 + 24),
        2 * 3 * (5 + 20),
    ]
    assert [sparse_gemm_cycles(20, col, d, fold_overhead=5) for d in flows] == [
        2 * 3 * (5 + 40),
        3 * 3 * (16 + 5 + 20),
        3 * 3 * (16 + 5 + 12),
        2 * 3 * (5 + 40),
    ]


def test_systolic_empty_fold_costs_nothing():
    mask = torch.zeros(4, 8)
    mask[:, :4] = 1  # the second column tile holds no weight
    p = SparsePattern.from_mask(mask, 4, 4)
    assert (p.k_nz.tolist(), p.n_nz.tolist(), p.k_nz_packed.tolist(), p.nnz, p.channels_nz) == ([4, 0], [4], [4], 16, 4)
    # flexisaga.md §4.2, M = 4 on 4×4: sOS 1·(4 + 6) for the live tile only; sWS (⌈4/4⌉ + ⌈0/4⌉)·(8 + 4 + 4 − 2);
    # sIS ⌈4/4⌉·(8 + 4 − 2 + 4); csOS one packed group of 4 channels: 10; dense OS 1·2·(6 + 4) = 20
    assert [sparse_gemm_cycles(4, p, d) for d in ("sos", "sws", "sis", "csos", "os")] == [10, 14, 14, 10, 20]


def test_flexisaga_uniform_sparsity_and_forced_dataflows():
    fc1 = Op("matmul", "addmm", "layers.0.mlp.fc1", 1, 20, 40, 24, True)  # in a block: pruned uniformly
    outside = Op("matmul", "addmm", "pooler.dense", 1, 20, 40, 24, True)  # outside the blocks: dense

    def row(op, cfg=ALPHA5, **options):
        (r,) = estimate(Workload((op,)), "flexisaga", config=cfg, tile=(16, 8), **options).rows
        return r.name.split(" ")[1], r.cycles

    # flexisaga.md §4.3, values of test_systolic_fold_overhead_replaces_skew_and_drain
    assert row(fc1, sparsity=0.5, vector="row") == ("[sos]", 150)  # below dOS 270, dWS 369, dIS 405
    assert [row(fc1, sparsity=0.5, vector="row", dataflow=d)[1] for d in ("sws", "sis", "csos")] == [246, 405, 150]
    assert row(fc1, sparsity=0.5, vector="col", dataflow="sis") == ("[sis]", 297)
    assert row(fc1, sparsity=0.5, vector="channel", dataflow="sis") == ("[sis]", 297)  # whole columns: "col"
    assert row(fc1, sparsity=0.5, vector="col") == ("[dos]", 270)  # sOS ties at 270: dOS comes first
    assert row(fc1, sparsity=0.5, vector="auto") == ("[sos]", 150)  # best row 150 < best col 270
    # "auto" compares at the configured α: 16 × 16 → 32, M = 16. Row (8 of 16 rows kept in 4 column tiles): sOS
    # 1·4·(5 + 8) = 52, sWS 4·(16 + 5 + 16) = 148, sIS 2·1·(16 + 5 + 32) = 106; col (16 of 32 columns kept): sOS
    # 1·4·(5 + 16) = 84, sWS 148, sIS 2·1·(16 + 5 + 16) = 74. Row wins at α = 5 (at R + C − 2 = 22 col would: 120 > 108)
    fc2 = Op("matmul", "addmm", "layers.0.mlp.fc2", 1, 16, 16, 32, True)
    assert row(fc2, sparsity=0.5, vector="auto") == ("[sos]", 52)
    assert row(fc2, sparsity=0.5, vector="col") == ("[sis]", 74)
    # η = 0.5: s = 0.25, 40 − 10 = 30 rows kept: sOS 2·3·(5 + 30) = 210
    assert row(fc1, dataclasses.replace(ALPHA5, skip_efficiency=0.5), sparsity=0.5, vector="row") == ("[sos]", 210)
    assert row(fc1, sparsity=0.5, sparse=False) == ("[dos]", 270)
    # a forced sparse dataflow falls back to its dense counterpart where no sparsity applies
    assert [row(outside, sparsity=0.5, dataflow=d) for d in ("sws", "sis", "csos")] == [
        ("[dws]", 369),
        ("[dis]", 405),
        ("[dos]", 270),
    ]
    # batch instances (heads) stay dense and cost batch × one product (§4.4)
    assert row(Op("matmul", "qk", "layers.0.attn", 3, 20, 40, 24), sparsity=0.5) == ("[dos]", 3 * 270)


def test_flexisaga_host_ops_and_empty_products():
    softmax = Op("softmax", "softmax", "layers.0.attn", 2, 3, 0, 5)  # 30 elements
    empty = Op("matmul", "mm", "", 1, 4, 0, 4)  # K = 0: no MAC
    ops = Workload((softmax, empty))
    # flexisaga.md §4.4: host_cycles_per_element per element, rounded up: 30·0.25 = 7.5 → 8; default 1.0: 30
    assert cycles(estimate(ops, "flexisaga", config=FlexiSAGACost(host_cycles_per_element=0.25))) == [8, 0]
    assert cycles(estimate(ops, "flexisaga", config=FLEXISAGA)) == [30, 0]
    assert cycles(estimate(ops, "flexisaga", config=FLEXISAGA, non_gemm=False)) == [0, 0]


def test_flexisaga_grouped_product_with_its_own_masks():
    described, _ = hardware("flexisaga", tile=(16, 8), sparsity=0.0)
    pruned = torch.ones(32, 8)
    pruned[::2] = 0  # every even k of group 0 is a zero 1×8 row vector: K_nz = 16
    w = torch.cat((pruned, torch.ones(32, 8)), dim=1)  # K × (2 groups · 8 channels); group 1 dense
    conv = Op("matmul", "convolution", "layers.0.conv", 2, 16, 32, 8, True, weight=w)
    linear = Op("matmul", "addmm", "layers.0.fc", 1, 16, 32, 8, True, weight=pruned)
    report = estimate(Workload((conv, linear), hardware=described), "flexisaga", config=FLEXISAGA)
    # flexisaga.md §4.3, M = 16, K = 32, N = 8 per group on 16×8 (α = R + C − 2 = 22): dense dOS 1·1·(22 + 32) = 54,
    # dWS 2·1·(16 + 22 + 16) = 108, dIS 2·2·(16 + 22 + 8) = 184 per group. Group 0: sOS 1·(22 + 16) = 38,
    # sWS ⌈16/16⌉·54 = 54, sIS 2·2·(16 + 22 + 8) = 184 (every row tile keeps all 8 columns), csOS 38; group 1 is
    # priced dense in every dataflow. One dataflow for the layer: sOS 38 + 54 = 92 (dOS 108, sWS 162, dWS 216)
    assert [(r.name, r.cycles) for r in report.rows] == [("convolution [sos]", 92), ("addmm [sos]", 38)]


def test_flexisaga_auto_cycles_uses_the_fitted_fold_overhead():
    mask = torch.zeros(4, 8)
    mask[:, :4] = 1  # as in test_systolic_empty_fold_costs_nothing
    fitted = fitted_config(FLEXISAGA, "flexisaga").fold_overhead
    alpha = 4 + 4 - 2 if fitted is None else fitted
    # flexisaga.md §4.2, the least sparse count on 4×4 at M = 4: sOS 1·(α + 4), sWS and sIS 1·(4 + α + 4), csOS α + 4
    assert auto_cycles(mask, 4, 4, 4) == alpha + 4
