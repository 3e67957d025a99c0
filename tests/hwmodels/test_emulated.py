"""One description per accelerator: the emulated model feeds the cost layer.

estimate(emulate(model, t, **o), x) and estimate(model, t, x, **o) describe the same hardware and
give the same report; tracing an emulated model records the model's operations; every option of a
target either moves the cost model or is declared accuracy-only, and the tests hold it to that.
"""

import dataclasses
import functools
import warnings

import pytest
import torch

from hwmodels import TARGETS, estimate, trace
from hwmodels.workload import Workload
from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM
from numerics.nn import emulate
from numerics.registry import get_target, option_table
from numerics.uclm import HASTILY_UCLM
from tests.models import TinyTransformer, minilm, tiny_gpt2

NON_DEFAULT = {
    "softex": {"lanes": 16},
    "hastily": {"adc_bits": 5},
    "atleus": {"adc_bits": 6, "quant": "M8F4"},
    "flexisaga": {"sparsity": 0.25},
}
"""One non-default hardware point per target."""


def _shape(workload):
    return [(o.kind, o.name, o.scope, o.batch, o.m, o.k, o.n, o.static) for o in workload.ops]


def _tiny_gpt2():
    return tiny_gpt2(), {"input_ids": torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(1))}


def _minilm():
    model, tok = minilm()
    return model, dict(tok(["A man is playing a guitar on stage."], return_tensors="pt"))


@pytest.mark.parametrize("subject", [_minilm, _tiny_gpt2], ids=["minilm", "gpt2"])
@pytest.mark.parametrize("target", TARGETS)
def test_emulated_and_plain_model_give_the_same_report(subject, target):
    model, inputs = subject()
    for options in ({}, NON_DEFAULT[target]):
        plain = estimate(model, target, forward_kwargs=inputs, **options)
        emulated = estimate(emulate(model, target, **options), forward_kwargs=inputs)
        assert emulated.total_cycles == plain.total_cycles
        assert emulated.to_dict() == plain.to_dict()
    default = estimate(model, target, forward_kwargs=inputs)
    assert (plain.total_cycles, plain.energy_j) != (default.total_cycles, default.energy_j)  # the point moved


@pytest.mark.parametrize("target", TARGETS)
def test_tracing_an_emulated_model_records_the_models_operations(target):
    model, tokens = TinyTransformer(), torch.randint(0, 50, (2, 7))
    em = emulate(model, target, **({"accumulation": "sequential"} if target == "flexisaga" else {}))
    em(tokens)
    counts = dict(em.emulation.counts)
    plain, traced = trace(model, tokens), trace(em, tokens)
    assert _shape(traced) == _shape(plain)  # e.g. 4 products, not the emulator's per-bit GEMMs
    assert sum(o.kind == "matmul" for o in traced.ops) == 6
    assert traced.target == target and traced.hardware == em.emulation.config
    assert plain.target is None and plain.hardware is None
    assert dict(em.emulation.counts) == counts  # tracing leaves the emulation's record alone
    assert torch.equal(em(tokens), em(tokens))  # and emulation is back on afterwards
    if target in ("softex", "hastily"):
        assert not torch.equal(em(tokens), model(tokens))


def test_an_emulated_model_is_priced_as_emulated():
    model, tokens = TinyTransformer(), torch.randint(0, 50, (1, 6))
    em = emulate(model, "hastily", adc_bits=5)
    report = estimate(em, tokens)
    assert report.target == "hastily" and report.options["adc_bits"] == 5
    assert estimate(em, tokens, exp="vfu").total_cycles != report.total_cycles  # cost-only options add
    assert estimate(em, "hastily", tokens).to_dict() == report.to_dict()
    assert estimate(trace(em, tokens)).to_dict() == report.to_dict()  # the workload carries the hardware
    with pytest.raises(ValueError, match=r"emulated with adc_bits=5; emulate it again.*adc_bits=7"):
        estimate(em, tokens, adc_bits=7)
    with pytest.raises(ValueError, match="emulated on 'hastily'.*cannot be priced on 'atleus'"):
        estimate(em, "atleus", tokens)
    with pytest.raises(ValueError, match="name a target"):
        estimate(trace(model, tokens))
    with pytest.raises(ValueError, match="fp32.*no hardware cost model"):
        estimate(emulate(model, "fp32"), tokens)


# --------------------------------------------------------------- every option moves cost or says why not

TOKENS = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(3))
ALTERNATIVES = {
    "softex": {
        "lanes": 16,
        "gelu_terms": 2,
        "accumulators": 4,
        "matmul_accumulate": "bf16",
        "flush_subnormals": True,
        "softmax": False,
        "gelu": False,
        "matmul": False,
    },
    "hastily": {
        "crossbar": dataclasses.replace(HASTILY_SRAM, rows=32, cols=32),
        "adc_bits": 5,
        "uclm": dataclasses.replace(HASTILY_UCLM, er_mode="linear"),
        "weight_granularity": "tensor",
        "calibrate_with": [TOKENS],
        "attention": False,
        "heads": ("*.intermediate.*",),
    },
    "atleus": {
        "quant": "M4F4",
        "crossbar": dataclasses.replace(ATLEUS_RERAM, rows=64, cols=64),
        "adc_bits": 6,
        "noise": 0.02,
        "seed": 5,
        "resample_noise": True,
        "noise_domain": "weight",
        "lora_rank": 4,
        "lora_alpha": 8.0,
        "calibrate_with": [TOKENS],
        "sa_dtype": "float32",
        "heads": ("*.intermediate.*",),
    },
    "flexisaga": {
        "sparsity": 0.25,
        "tile": (8, 8),
        "vector": "col",
        "criterion": "l1",
        "accumulation": "sequential",
        "fused_mac": True,
        "heads": ("*.intermediate.*",),
        "auto_tokens": 1,
        "calibrate_with": [TOKENS[:1, :3]],  # one sequence of 3 tokens: other input norms, other masks
        "reconstruct": True,
        "damping": 0.5,
        "cycles": "flipped",
        "allocation": "global",
    },
}
"""A non-default value for every option of every target."""


def _flipped_cycles(weight, m, rows, cols):
    """The cost model's cycle count negated: vector="auto" then keeps the other orientation."""
    return -get_target("flexisaga").cost_function("auto_cycles")(weight, m, rows, cols)


def _rows_from_64_tokens(weight, m, rows, cols):
    """Prefers row vectors at m >= 64 and column vectors below (a row-pruned weight has whole zero rows
    in its first column tile)."""
    row_pruned = bool((weight[:, :cols] == 0).all(1).any())
    return 1 if row_pruned == (m >= 64) else 2


BASE = {
    ("flexisaga", None): {"accumulation": "fast"},
    ("flexisaga", "cycles"): {"vector": "auto"},  # cycles and auto_tokens act through vector="auto"
    ("flexisaga", "auto_tokens"): {"vector": "auto", "cycles": _rows_from_64_tokens},
    ("flexisaga", "calibrate_with"): {"criterion": "activation", "calibrate_with": [TOKENS]},
    ("flexisaga", "reconstruct"): {"calibrate_with": [TOKENS], "criterion": "activation"},
    ("flexisaga", "damping"): {"calibrate_with": [TOKENS], "reconstruct": True},
    ("hastily", "resample_noise"): {},
    ("atleus", "resample_noise"): {"noise": 0.02},
}
COST_OPTIONS = {("flexisaga", "criterion"): {"dataflow": "sws"}, ("flexisaga", "calibrate_with"): {"dataflow": "sws"}}
"""Where an option's effect on cost shows: criterion changes which vectors go, which only the per-tile
fold count of sWS sees when every tile is full."""


def _priced(target, cost_options, **options):
    if options.get("cycles") == "flipped":
        options["cycles"] = _flipped_cycles
    report = estimate(emulate(_tiny_bert(), target, **options), TOKENS, **cost_options)
    return report.total_cycles, report.energy_j


@functools.lru_cache(maxsize=1)
def _tiny_bert():
    """The study's seeded 2-layer BERT (hidden 64, 4 heads, FFN 128): blocks, Q/K/V, GELU, LayerNorm."""
    from hwmodels.study import tiny_subject

    return tiny_subject(["a b c"] * 3).model


@pytest.mark.parametrize("target", TARGETS)
def test_every_option_is_declared_and_has_an_alternative(target):
    schema = get_target(target).options
    names = [f.name for f in dataclasses.fields(schema)]
    assert set(schema.COST) | set(schema.ACCURACY_ONLY) == set(names) == set(ALTERNATIVES[target])
    assert not set(schema.COST) & set(schema.ACCURACY_ONLY)
    assert all(why for why in schema.ACCURACY_ONLY.values())
    assert [row[0] for row in option_table(target)] == names
    assert all(row[2] == "moves cost" or row[2].startswith("accuracy-only: ") for row in option_table(target))


@pytest.mark.parametrize("target,option", [(t, o) for t in TARGETS for o in ALTERNATIVES[t]])
def test_hardware_options_move_cost_and_the_others_do_not(target, option):
    base = {**BASE.get((target, None), {}), **BASE.get((target, option), {})}
    cost = COST_OPTIONS.get((target, option), {})
    before = _priced(target, cost, **base)
    after = _priced(target, cost, **{**base, option: ALTERNATIVES[target][option]})
    if option in get_target(target).options.COST:
        assert after != before, f"{target}.{option} is declared to move cost but does not"
    else:
        assert after == before, f"{target}.{option} is declared accuracy-only but moves cost"


# --------------------------------------------------------------- deprecated spellings


def test_legacy_cost_spellings_still_work_with_a_warning():
    import hwmodels.flexisaga as flexisaga
    from tests.hwmodels.workloads import encoder

    workload = encoder(16)
    with pytest.warns(DeprecationWarning, match="FlexiSAGACost"):
        assert flexisaga.FlexiSAGAConfig is flexisaga.FlexiSAGACost
    pairs = [
        ("atleus", {"weights": "M4F8"}, {"quant": "M4F8"}),
        ("atleus", {"lora": False}, {"lora_rank": 0}),
        ("atleus", {"lora": True}, {"lora_rank": 32}),
        ("atleus", {"mha_weight_bits": 4, "ffn_weight_bits": 6}, {"quant": _quant(4, 6)}),
        ("flexisaga", {"rows": 8, "cols": 32}, {"tile": (8, 32)}),
    ]
    for target, old, new in pairs:
        with pytest.warns(DeprecationWarning, match="deprecated"):
            legacy = estimate(workload, target, **old)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert legacy.to_dict() == estimate(workload, target, **new).to_dict()


def _quant(mha, ffn):
    from numerics.quant import QuantConfig

    return QuantConfig(mha, ffn)


def test_empty_workload_prices_to_zero():
    for target in TARGETS:
        assert estimate(Workload(()), target).total_cycles == 0
