"""emulate(): registry, option validation, interception of every spelling, gradients, isolation."""

import copy
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics import softex
from numerics.formats import bf16_to_bits, round_to_bfloat16
from numerics.nn import bf16_matmul, bf16_values, emulate, linears_from_conv1d, register_target, target_options, targets
from tests.models import TinyTransformer, tiny_gpt2
from tests.numerics.reference_formats import bf16_code, bf16_value


def bf16(x):
    return round_to_bfloat16(x.float())


class Calls(nn.Module):
    """Calls one operation in the spelling named by ``kind``."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, y=None):
        k = self.kind
        return {
            "F.softmax": lambda: F.softmax(x, dim=-1),
            "torch.softmax": lambda: torch.softmax(x, -1),
            "Tensor.softmax": lambda: x.softmax(-1),
            "nn.Softmax": lambda: self.softmax(x),
            "F.gelu": lambda: F.gelu(x),
            "F.gelu tanh": lambda: F.gelu(x, approximate="tanh"),
            "matmul": lambda: torch.matmul(x, y),
            "@": lambda: x @ y,
            "Tensor.matmul": lambda: x.matmul(y),
            "mm": lambda: torch.mm(x, y),
            "bmm": lambda: torch.bmm(x.unsqueeze(0), y.unsqueeze(0))[0],
            "addmm": lambda: torch.addmm(torch.ones(y.shape[-1]), x, y),
            "baddbmm": lambda: torch.baddbmm(torch.ones(y.shape[-1]), x.unsqueeze(0), y.unsqueeze(0))[0],
        }[k]()


X = torch.randn(4, 24, generator=torch.Generator().manual_seed(0)) * 3
Y = torch.randn(24, 5, generator=torch.Generator().manual_seed(1))


def test_fast_bf16_cast_equals_the_formats_rounding():
    from tests.numerics.test_formats import f32_from_bits, structured_fp32

    x = f32_from_bits(structured_fp32())
    assert torch.equal(bf16_to_bits(bf16_values(x)), bf16_to_bits(round_to_bfloat16(x)))
    x64 = torch.tensor([1 + 2.0**-8 + 2.0**-30], dtype=torch.float64)  # rounds once, not via FP32
    assert bf16_to_bits(bf16_values(x64)).item() == 0x3F81


def test_registry_lists_the_targets():
    assert {"fp32", "softex"} <= set(targets())


def test_bad_calls_raise_clear_errors():
    model = TinyTransformer()
    with pytest.raises(ValueError, match="unknown target 'gpu'.*fp32.*softex"):
        emulate(model, "gpu")
    with pytest.raises(ValueError, match="unknown option.*lane.*valid options: accumulators"):
        emulate(model, "softex", lane=8)
    with pytest.raises(ValueError, match="unknown option"):
        emulate(model, "fp32", lanes=8)
    with pytest.raises(TypeError, match="nn.Module"):
        emulate(lambda x: x, "fp32")
    with pytest.raises(ValueError, match="already emulated"):
        emulate(emulate(model, "fp32"), "softex")
    for bad in (
        {"lanes": 65},
        {"lanes": 0},
        {"lanes": 128},
        {"accumulators": 2},
        {"gelu_terms": 9},
        {"matmul_accumulate": "fp16"},
        {"softmax": "yes"},
    ):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            emulate(model, "softex", **bad)


def test_fp32_target_is_bit_identical_and_original_is_untouched():
    model = TinyTransformer()
    before = copy.deepcopy(model.state_dict())
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(2))
    same = emulate(model, "fp32")
    assert torch.equal(same(tokens), model(tokens))
    emulated = emulate(model, "softex")
    out = emulated(tokens)
    assert not torch.equal(out, model(tokens))
    assert not hasattr(model, "emulation") and not model._forward_pre_hooks and not model._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert emulated.ff[0].weight is not model.ff[0].weight


@pytest.mark.parametrize("kind", ["F.softmax", "torch.softmax", "Tensor.softmax", "nn.Softmax"])
def test_every_softmax_spelling_runs_on_softex(kind):
    em = emulate(Calls(kind), "softex", lanes=16)
    got = em(X)
    assert em.emulation.counts == {"softmax": 1}
    assert got.dtype == torch.float32
    assert torch.equal(got, softex.softmax(bf16(X), dim=-1, lanes=16).float())


@pytest.mark.parametrize("kind", ["F.gelu", "F.gelu tanh"])
def test_every_gelu_spelling_runs_on_softex(kind):
    em = emulate(Calls(kind), "softex", gelu_terms=3)
    assert torch.equal(em(X), softex.gelu(bf16(X), terms=3).float())
    assert em.emulation.counts == {"gelu": 1}


def test_hugging_face_gelu_modules_are_swapped():
    activations = pytest.importorskip("transformers.activations")
    model = nn.Sequential(activations.NewGELUActivation(), nn.GELU(), activations.GELUActivation())
    em = emulate(model, "softex")
    out = em(X)
    assert em.emulation.swapped == {"NewGELUActivation": 1, "GELUActivation": 1}
    assert em.emulation.counts == {"gelu": 3}
    want = X
    for _ in range(3):
        want = softex.gelu(bf16(want)).float()
    assert torch.equal(out, want)
    assert type(model[0]).__name__ == "NewGELUActivation"  # the original keeps its modules


@pytest.mark.parametrize("kind", ["matmul", "@", "Tensor.matmul", "mm", "bmm", "addmm", "baddbmm"])
def test_every_matmul_spelling_runs_on_redmule(kind):
    em = emulate(Calls(kind), "softex")
    got = em(X, Y)
    assert em.emulation.counts == {"matmul": 1}
    bias = torch.ones(5) if "add" in kind else 0.0
    # oracle: torch's own BF16 casts around an FP32 product
    want = (X.bfloat16().float() @ Y.bfloat16().float() + bias).bfloat16().float()
    assert torch.equal(got, want)


def test_linear_runs_on_redmule_with_bias():
    lin = nn.Linear(24, 5)
    em = emulate(lin, "softex")
    want = (X.bfloat16().float() @ lin.weight.bfloat16().float().T + lin.bias.detach()).bfloat16().float()
    assert torch.equal(em(X), want)
    assert em.emulation.counts == {"matmul": 1}


def test_bf16_chained_accumulation_matches_scalar_reference():
    g = torch.Generator().manual_seed(3)
    a, b, bias = torch.randn(3, 40, generator=g), torch.randn(40, 2, generator=g), torch.randn(2, generator=g)
    got = bf16_to_bits(round_to_bfloat16(bf16_matmul(a, b, bias, accumulate="bf16"))).tolist()
    av, bv, bb = bf16(a).double().tolist(), bf16(b).double().tolist(), bf16(bias).double().tolist()
    for i in range(3):
        for j in range(2):
            acc = Fraction(bb[j])
            for k in range(40):  # exact rationals, one rounding per step
                acc = bf16_value(bf16_code(acc + Fraction(av[i][k]) * Fraction(bv[k][j])))
            assert got[i][j] == bf16_code(acc)
    fp32 = bf16_matmul(a, b, bias)
    assert not torch.equal(fp32, bf16_matmul(a, b, bias, accumulate="bf16"))  # the accumulator matters


def test_attention_decomposition_matches_sdpa_when_arithmetic_is_exact():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    kv2 = torch.randn(2, 2, 6, 8, generator=g)
    bool_mask = torch.rand(6, 6, generator=g) > 0.3
    bool_mask[:, 0] = True
    float_mask = torch.randn(6, 6, generator=g)

    class Attn(nn.Module):
        def forward(self, q, k, v, **kw):
            return F.scaled_dot_product_attention(q, k, v, **kw)

    exact = emulate(Attn(), "softex", softmax=False, matmul=False, gelu=False)
    assert F.scaled_dot_product_attention not in exact.emulation.handlers  # SDPA runs natively
    cases = [{}, {"is_causal": True}, {"attn_mask": bool_mask}, {"attn_mask": float_mask}, {"scale": 0.3}]
    em = emulate(Attn(), "softex", softmax=False)
    for kw in cases:
        want = F.scaled_dot_product_attention(q, k, v, **kw)
        got = em(q, k, v, **kw)
        assert em.emulation.counts == {"attention": 1, "matmul": 2}
        assert (got - want).abs().max() < 0.05  # only the BF16 products differ
    gqa = emulate(Attn(), "softex")(q, kv2, kv2, enable_gqa=True)
    assert gqa.shape == q.shape


def test_straight_through_gradients():
    x = X.clone().requires_grad_(True)
    w = torch.randn(4, 24, generator=torch.Generator().manual_seed(5))
    em = emulate(Calls("F.softmax"), "softex")
    (em(x) * w).sum().backward()
    x2 = X.clone().requires_grad_(True)
    (torch.softmax(x2, -1) * w).sum().backward()
    assert torch.equal(x.grad, x2.grad)  # the exact softmax's gradient
    model = TinyTransformer()
    emulated = emulate(model, "softex")
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(2))
    emulated(tokens).pow(2).mean().backward()
    grads = [p.grad for p in emulated.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.parameters())


def test_counts_reset_per_forward_and_mode_is_removed_after_errors():
    model = TinyTransformer()
    em = emulate(model, "softex")
    tokens = torch.randint(0, 50, (2, 7))
    em(tokens)
    first = dict(em.emulation.counts)
    assert first == {"softmax": 1, "gelu": 1, "matmul": 6}
    em(tokens)
    assert dict(em.emulation.counts) == first
    assert "emulated in the last pass: gelu x1, matmul x6, softmax x1" in str(em.emulation)
    with pytest.raises(IndexError):
        em(torch.tensor([[99]]))  # out of the embedding's range
    assert torch.equal(torch.softmax(X, -1), F.softmax(X, dim=-1))  # nothing left intercepting
    em(tokens)
    assert dict(em.emulation.counts) == first
    clone = copy.deepcopy(em)
    assert torch.equal(clone(tokens), em(tokens))


def test_target_options_lists_defaults():
    assert target_options("softex")["lanes"] == 8 and target_options("fp32") == {}
    assert target_options("atleus")["quant"] == "M8F8"
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        target_options("tpu")


def test_options_are_typed_and_checked_before_the_copy(monkeypatch):
    import copy

    model = TinyTransformer()
    copies = []
    monkeypatch.setattr(copy, "deepcopy", lambda m, *a: copies.append(m) or m)
    for target, bad, match in (
        ("atleus", {"adc_bits": 0}, r"adc_bits must be in \[1, 16\]"),
        ("atleus", {"quant": "M3F3"}, "quant must be a QuantConfig or one of"),
        ("hastily", {"weight_granularity": "crossbar"}, "weight_granularity"),
        ("flexisaga", {"tile": (16, 0)}, "tile cols"),
    ):
        with pytest.raises(ValueError, match=match):
            emulate(model, target, **bad)
    with pytest.raises(TypeError, match="crossbar must be a CrossbarConfig"):
        emulate(model, "hastily", crossbar="64x64")
    assert copies == []  # nothing was copied, let alone changed
    em = emulate(TinyTransformer(), "atleus", adc_bits=6, quant="M8F4")
    assert em.emulation.config.effective_crossbar.adc_bits == 6
    assert em.emulation.config.quant_config.ffn_weight_bits == 4
    assert em.emulation.options["adc_bits"] == 6
    assert str(em.emulation).startswith("emulated target 'atleus' (quant='M8F4', adc_bits=6)")


def test_a_target_registered_with_an_options_dict_gets_a_dict():
    from numerics import registry

    seen = []

    @register_target("toy", summary="scales every softmax input", options={"scale": 2.0})
    def prepare(model, options):
        seen.append(options)
        return {}

    try:
        em = emulate(TinyTransformer(), "toy", scale=3.0)
        assert seen == [{"scale": 3.0}] and em.emulation.options == {"scale": 3.0}
        assert target_options("toy") == {"scale": 2.0}
        with pytest.raises(ValueError, match="unknown option.*scal.*valid options: scale"):
            emulate(TinyTransformer(), "toy", scal=1)
    finally:
        registry._TARGETS.pop("toy")


def test_gpt2_conv1d_projections_become_linears_for_weight_placing_targets():
    model = tiny_gpt2(layers=2, d=32, heads=4, vocab=50, positions=16, lm_head=False)
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    converted = copy.deepcopy(model)
    assert linears_from_conv1d(converted) == {"Conv1D -> Linear": 8}  # c_attn, c_proj, c_fc, c_proj per layer
    assert not any(type(m).__name__ == "Conv1D" for m in converted.modules())
    with torch.no_grad():
        assert torch.allclose(converted(ids).last_hidden_state, model(ids).last_hidden_state, rtol=0, atol=1e-5)
    for target, swapped in [
        ("hastily", "Linear -> CrossbarLinear"),
        ("atleus", "Linear -> CrossbarLinear"),
        ("flexisaga", "Linear -> SparseLinear"),
    ]:
        em = emulate(model, target)
        assert em.emulation.swapped == {"Conv1D -> Linear": 8, swapped: 8}
    assert any(type(m).__name__ == "Conv1D" for m in model.modules())  # the original keeps its layers
