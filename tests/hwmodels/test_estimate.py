"""estimate(): the public entry point, and invariants every target must satisfy."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import TARGETS, estimate, option_names, trace
from hwmodels.workload import Op, Workload
from numerics.nn import emulate
from numerics.quant import QuantConfig
from tests.hwmodels.workloads import encoder

# peak MACs per cycle of each target's clock (independent of the cost code: paper constants)
PEAK = {
    "softex": 192,  # RedMulE 24×8 FMAs
    "hastily": 16_384 * 4096 / 8,  # every UCLM busy, one MVM per 8 cycles (one per input bit) at best
    "atleus": 24_576 * 128 * 128 / (8 * 100) + 16 * 128 * 32,  # ReRAM at 1 slice + systolic tier
    "flexisaga": 16 * 16,  # one MAC per PE per cycle
}
OPTION_SETS = {
    "softex": [{}, {"softex": False}, {"voltage": 0.55}],
    "hastily": [{}, {"exp": "vfu", "multicore_softmax": False}, {"pipelining": False}],
    "atleus": [
        {},
        {"mode": "finetune", "lora_rank": 32},
        {"pipelining": False, "quant": "M4F4"},
        {"mapping": "systolic_only"},
        {"replication": "auto"},
    ],
    "flexisaga": [{}, {"sparsity": 0.0}, {"dataflow": "is"}, {"sparsity": 0.3, "vector": "col"}],
}
shapes = st.fixed_dictionaries(
    {
        "n": st.integers(1, 80),
        "layers": st.integers(1, 2),
        "batch": st.integers(1, 3),
        "d": st.sampled_from([32, 64, 128]),
        "heads": st.sampled_from([1, 2, 4]),
        "d_ff": st.sampled_from([64, 256]),
    }
)


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=12, deadline=None)
@given(shape=shapes)
def test_non_negative_and_below_peak(target, shape):
    workload = encoder(**shape)
    for options in OPTION_SETS[target]:
        report = estimate(workload, target, **options)
        assert report.total_cycles >= 0 and report.energy_j >= 0
        assert all(row.cycles >= 0 and row.energy_j >= 0 for row in report.rows)
        assert all(v >= 0 for row in report.rows for v in row.components.values())
        assert report.total_cycles * PEAK[target] >= report.macs  # executed MACs (sparsity)
        for row in report.rows:
            if row.kind == "matmul":
                assert row.cycles * PEAK[target] >= row.operations


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=12, deadline=None)
@given(shape=shapes, extra=st.integers(1, 64))
def test_longer_sequences_never_cheaper(target, shape, extra):
    short, long = encoder(**shape), encoder(**{**shape, "n": shape["n"] + extra})
    for options in OPTION_SETS[target]:
        a, b = estimate(short, target, **options), estimate(long, target, **options)
        assert b.total_cycles >= a.total_cycles
        assert b.energy_j >= a.energy_j * (1 - 1e-12)


@settings(max_examples=15, deadline=None)
@given(shape=shapes, bits=st.tuples(st.integers(2, 15), st.integers(2, 15)), adc=st.integers(1, 15))
def test_energy_non_decreasing_in_weight_and_adc_bits(shape, bits, adc):
    workload = encoder(**shape)
    mha, ffn = bits
    base = estimate(workload, "atleus", quant=QuantConfig(mha, ffn), adc_bits=adc).energy_j
    for quant, adc_bits in (
        (QuantConfig(mha + 1, ffn), adc),
        (QuantConfig(mha, ffn + 1), adc),
        (QuantConfig(mha, ffn), adc + 1),
    ):
        assert estimate(workload, "atleus", quant=quant, adc_bits=adc_bits).energy_j >= base


@settings(max_examples=15, deadline=None)
@given(shape=shapes, finetune=st.booleans())
def test_a_pipeline_is_never_slower_than_the_ops_in_sequence(shape, finetune):
    workload = encoder(**shape)
    for target, options in (("hastily", {}), ("atleus", {"mode": "finetune"} if finetune else {})):
        pipelined = estimate(workload, target, **options).total_cycles
        assert pipelined <= estimate(workload, target, pipelining=False, **options).total_cycles


def test_a_dominant_stage_runs_in_sequence():
    # one layer of two static products and nothing else: Atleus' S4 alone; the four-stage formula
    # would charge (1·4 + 0)·T_S4 for what takes T_S4 in sequence
    ops = (
        Op("matmul", "addmm", "encoder.layer.0.intermediate.dense", 1, 16, 128, 512, True),
        Op("matmul", "addmm", "encoder.layer.0.output.dense", 1, 16, 512, 128, True),
    )
    workload = Workload(ops)
    pipelined, in_sequence = (estimate(workload, "atleus", pipelining=p).total_cycles for p in (True, False))
    assert pipelined == in_sequence


@settings(max_examples=15, deadline=None)
@given(shape=shapes, adc=st.integers(1, 15))
def test_cim_cost_strictly_rises_with_adc_bits(shape, adc):
    """One more ADC bit: more energy on HASTILY and Atleus, and a longer MVM on HASTILY (SAR): more
    cycles unpipelined, never fewer pipelined (the stage may be bound by vector work instead)."""
    workload = encoder(**shape)
    for target in ("hastily", "atleus"):
        low, high = (estimate(workload, target, adc_bits=b) for b in (adc, adc + 1))
        assert high.energy_j > low.energy_j
        if target == "hastily":
            assert high.total_cycles >= low.total_cycles
            low, high = (estimate(workload, target, adc_bits=b, pipelining=False) for b in (adc, adc + 1))
            assert high.total_cycles > low.total_cycles


@settings(max_examples=15, deadline=None)
@given(
    shape=shapes, s=st.lists(st.floats(0, 0.95), min_size=2, max_size=2), vector=st.sampled_from(["row", "col", "auto"])
)
def test_more_sparsity_never_slower(shape, s, vector):
    workload = encoder(**shape)
    low, high = sorted(s)
    a = estimate(workload, "flexisaga", sparsity=low, vector=vector)
    b = estimate(workload, "flexisaga", sparsity=high, vector=vector)
    assert b.total_cycles <= a.total_cycles
    assert a.total_cycles <= estimate(workload, "flexisaga", sparsity=0).total_cycles


def test_targets_and_errors():
    workload = encoder(8)
    with pytest.raises(ValueError, match="fp32.*no hardware cost model"):
        estimate(workload, "fp32")
    with pytest.raises(ValueError, match="target must be one of"):
        estimate(workload, "tpu")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lane'\].*valid options: .*'lanes'"):
        estimate(workload, "softex", lane=16)
    with pytest.raises(TypeError, match="config"):
        estimate(workload, "softex", config=object())
    with pytest.raises(TypeError, match="inputs"):
        estimate(workload, "softex", torch.zeros(1))
    with pytest.raises(TypeError, match="workload"):
        estimate([1, 2], "softex")


def test_estimate_traces_a_model():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    x = torch.randn(4, 16)
    for target in TARGETS:
        direct = estimate(model, target, x)
        # FlexiSAGA prices the emulation's masks, so a plain model is traced through an emulated copy
        traced = trace(emulate(model, target) if target == "flexisaga" else model, x)
        assert direct.to_dict() == estimate(traced, target).to_dict()
        assert direct.macs <= 4 * (16 * 32 + 32 * 8)


def test_unchanged_options_reach_the_report():
    report = estimate(encoder(8), "hastily", exp="vfu", vfu_lanes=16)
    assert report.options["exp"] == "vfu" and report.options["config"].vfu_lanes == 16


def test_option_names_cover_behaviour_options_and_config_fields():
    names = option_names("hastily")
    assert {"exp", "multicore_softmax", "pipelining", "mvm_cycles", "freq_hz"} <= names
    assert {"quant", "mode", "adc_bits", "lora_rank", "sa_dtype"} <= option_names("atleus")
    with pytest.raises(ValueError, match="fp32"):
        option_names("fp32")
