"""Whole-model coverage: every call into an emulated model is emulated, every product spelling runs in
the target's arithmetic (or is named as unemulated), models in any float dtype and training work."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics.emulation import UnemulatedWarning
from numerics.nn import emulate
from numerics.redmule import bf16_matmul
from tests import architectures
from tests.models import TinyTransformer, tiny_gpt2

TARGETS = ["softex", "hastily", "atleus", "flexisaga"]
G = torch.Generator().manual_seed(0)
A, B = torch.randn(3, 5, 7, generator=G), torch.randn(3, 7, 4, generator=G)


def _bf16_exact(a, b):
    """RedMulE's product with a BF16 accumulator: order-independent, so any spelling must give it."""
    return bf16_matmul(a, b, accumulate="bf16")


class Calls(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


# --------------------------------------------------------------------- where emulation is active


def test_calls_into_submodules_and_slices_are_emulated():
    model = nn.Sequential(nn.Linear(7, 6), nn.Softmax(-1), nn.Linear(6, 3))
    em = emulate(model, "softex")
    x = torch.randn(4, 7, generator=G)
    whole = em(x)
    assert em.emulation.counts == {"matmul": 2, "softmax": 1}
    first = em[0](x)  # a submodule called directly is one pass of its own
    assert em.emulation.counts == {"matmul": 1} and em.emulation.passes == 2
    assert torch.equal(first, bf16_matmul(x, model[0].weight.T, model[0].bias))
    part = em[0:2](x)  # a slice is a new Sequential of the emulated modules: each call is a pass
    assert em.emulation.counts == {"softmax": 1} and em.emulation.passes == 4
    assert torch.equal(em[2](part), whole)
    assert torch.equal(em.forward(x), whole)


def test_generate_is_one_pass_and_encoder_decoder_encoders_are_emulated():
    pytest.importorskip("transformers")
    model = architectures.bart()  # two encoder and two decoder layers
    em = emulate(model, "softex")
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        out = em.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, num_beams=1)
    # encoder: 2 self-attentions; decoder: 2 x (self + cross attention) per step, one step per new token
    # (the first token of the output is the decoder start token)
    assert out.shape == (1, 4) and em.emulation.passes == 1
    assert em.emulation.counts["attention"] == 2 + 4 * 3
    encoder_alone = emulate(model, "softex")
    encoder_alone.get_encoder()(ids)
    assert encoder_alone.emulation.counts["attention"] == 2  # the encoder called directly is emulated


def test_out_arguments_receive_the_emulated_result():
    em = emulate(Calls(lambda a, b, out: torch.mm(a, b, out=out)), "softex")
    out = torch.empty(5, 4)
    got = em(A[0], B[0], out)
    assert got is out and torch.equal(out, bf16_matmul(A[0], B[0]))
    small = torch.empty(1)  # resized as torch does
    em(A[0], B[0], small)
    assert small.shape == (5, 4) and torch.equal(small, out)


@pytest.mark.parametrize(
    "spelling",
    [
        lambda a, b: torch.einsum("bij,bjk->bik", a, b),
        lambda a, b: torch.einsum("bij,bjk->bik", [a, b]),
        lambda a, b: torch.tensordot(a[0], b[0], dims=1),
        lambda a, b: torch.inner(a[0], b[0].T),
        lambda a, b: a[0] @ b[0],
        lambda a, b: torch.mv(a[0], b[0, :, 0]),
        lambda a, b: torch.dot(a[0, 0], b[0, :, 0]),
        lambda a, b: a.matmul(b),
    ],
    ids=["einsum", "einsum-list", "tensordot", "inner", "matmul", "mv", "dot", "Tensor.matmul"],
)
def test_every_product_spelling_runs_on_redmule(spelling):
    em = emulate(Calls(spelling), "softex", matmul_accumulate="bf16")
    got = em(A, B)
    exact = _bf16_exact(A, B)  # (3, 5, 4): every spelling above is a slice of it
    expected = {
        (3, 5, 4): exact,
        (5, 4): exact[0],
        (4,): exact[0, 0] if got.numel() == 4 else None,
        (5,): exact[0, :, 0],
        (): exact[0, 0, 0],
    }[tuple(got.shape)]
    assert em.emulation.counts == {"matmul": 1}
    assert torch.equal(got, expected)
    assert not torch.equal(got, spelling(A, B))  # BF16 differs from the FP32 product on these values


def test_einsum_on_a_crossbar_target_runs_on_the_crossbars():
    em = emulate(Calls(lambda a, b: torch.einsum("bij,bjk->bik", a, b)), "hastily")
    plain = emulate(Calls(lambda a, b: a @ b), "hastily")
    assert torch.equal(em(A, B), plain(A, B)) and em.emulation.counts == {"matmul": 1}


def test_an_uncovered_operation_is_listed_and_warned_once():
    model = nn.Sequential(nn.Linear(6, 6), nn.SiLU(), nn.Linear(6, 2))
    em = emulate(model, "softex")
    x = torch.randn(2, 6, generator=G)
    with pytest.warns(UnemulatedWarning, match="does not cover silu"):
        em(x)
    assert em.emulation.unemulated == {"silu": 1}
    assert "not emulated (model's arithmetic): silu x1" in str(em.emulation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second pass names nothing new
        em(x)
    assert em.emulation.unemulated == {"silu": 1}
    with pytest.warns(UnemulatedWarning, match="conv_transpose1d"):
        emulate(nn.ConvTranspose1d(2, 2, 3), "hastily")(torch.randn(1, 2, 5, generator=G))


def test_summary_is_truthful():
    em = emulate(TinyTransformer(), "hastily", attention=False)
    assert "no forward pass yet" in str(em.emulation)
    em(torch.randint(0, 50, (1, 4), generator=G))
    text = str(em.emulation)
    assert "no forward pass yet" not in text and "emulated in the last pass: linear x4" in text


# --------------------------------------------------------------------- dtypes and training


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_run_on_every_target(target, dtype):
    model = TinyTransformer().to(dtype)
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    em = emulate(model, target)
    with torch.no_grad():
        got, ref = em(tokens), model(tokens)
    assert got.dtype == dtype and torch.isfinite(got).all()
    cosine = F.cosine_similarity(got.double().flatten(1), ref.double().flatten(1)).min().item()
    assert cosine > 0.5  # flexisaga prunes half the weights; the others stay close


@pytest.mark.parametrize("target", TARGETS)
def test_training_updates_what_the_hardware_keeps_trainable(target):
    model = TinyTransformer()
    em = emulate(model, target, **({"accumulation": "fast"} if target == "flexisaga" else {}))
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    em(tokens).square().mean().backward()
    grads = {n for n, p in em.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"embed.weight", "norm1.weight", "norm2.bias"} <= grads  # off the crossbars: trainable everywhere
    on_crossbars = target in ("hastily", "atleus")
    assert ("qkv.weight" in grads) != on_crossbars  # crossbar weights are programmed, not trained


def test_lora_on_a_fused_qkv_projection_trains_only_the_q_and_v_thirds():
    model = tiny_gpt2(layers=1, d=32, heads=2, vocab=50, positions=16)
    em = emulate(model, "atleus", lora_rank=4)
    c_attn = em.transformer.h[0].attn.c_attn
    assert c_attn.lora_a.shape == (8, 32) and c_attn.lora_b.shape == (96, 8)
    trainable = {n for n, p in em.named_parameters() if p.requires_grad}
    assert trainable == {"transformer.h.0.attn.c_attn.lora_a", "transformer.h.0.attn.c_attn.lora_b"}
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))
    x = em.transformer.wte(ids)
    before = c_attn(x).detach()
    opt = torch.optim.SGD([c_attn.lora_a, c_attn.lora_b], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        em(ids).logits.square().mean().backward()
        opt.step()
    change = (c_attn(x).detach() - before).abs().amax((0, 1))  # per output feature
    assert change[:32].max() > 0 and change[64:].max() > 0  # Q and V moved
    assert change[32:64].max() == 0  # K did not


def test_heads_are_one_rule_on_every_target():
    transformers = pytest.importorskip("transformers")
    config = transformers.DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    model = transformers.DistilBertForSequenceClassification(config).eval()
    for target in ("hastily", "atleus", "flexisaga"):
        em = emulate(model, target)
        assert type(em.pre_classifier) is nn.Linear and type(em.classifier) is nn.Linear, target
        custom = emulate(model, target, heads=("classifier",))
        assert type(custom.pre_classifier) is not nn.Linear, target
    with pytest.warns(DeprecationWarning, match="'skip' of 'flexisaga' is now 'heads'"):
        old = emulate(model, "flexisaga", skip=("classifier",))
    assert type(old.pre_classifier) is not nn.Linear


def test_atleus_runs_heads_on_the_systolic_tier():
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.classifier = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.classifier(self.body(x))

    head_model = WithHead()
    em = emulate(head_model, "atleus")
    x = torch.randn(2, 8, generator=G)
    hidden = em.body(x)
    head = head_model.classifier  # a head by name: off the crossbars, a BF16 product on the systolic tier
    assert torch.equal(em(x), bf16_matmul(hidden, head.weight.T, head.bias))
    assert em.emulation.counts == {"linear": 1, "matmul": 1}


@pytest.mark.parametrize("target", TARGETS)
def test_kv_cache_generation_under_emulation(target):
    model = tiny_gpt2(layers=2, d=32, heads=2, vocab=50, positions=16)
    em = emulate(model, target)
    ids = torch.tensor([[3, 4, 5, 6]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = em.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, use_cache=True)
    assert out.shape == (1, 8) and torch.equal(out[:, :4], ids) and em.emulation.passes == 1
    steps, layers = 4, 2
    counts = em.emulation.counts
    if target == "flexisaga":  # every block Linear, every step; attention runs dense
        assert counts["linear"] == steps * layers * 4
    else:
        assert counts["attention"] == steps * layers


class FunctionalProducts(nn.Module):
    """A Linear and a conv called functionally with the model's own weights, and a head."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.kernel = nn.Parameter(torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(5)))
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        h = F.linear(x, self.proj.weight, self.proj.bias)  # outside the Linear module: not swapped
        c = F.conv1d(h.view(-1, 2, 4), self.kernel, padding=1).flatten(1)
        return self.classifier(h + c[:, :8])


@pytest.mark.parametrize("target", ["hastily", "flexisaga"])
def test_functional_static_products_are_named_where_the_hardware_would_place_them(target):
    em = emulate(FunctionalProducts(), target)
    with pytest.warns(UnemulatedWarning, match="functional conv1d, functional linear"):
        em(torch.randn(2, 8, generator=G))
    # the head's own F.linear runs on the host by the heads rule: not listed
    assert em.emulation.unemulated == {"functional linear": 1, "functional conv1d": 1}


def test_atleus_runs_functional_products_on_the_systolic_tier():
    model = FunctionalProducts()
    em = emulate(model, "atleus")
    x = torch.randn(2, 8, generator=G)
    em(x)
    assert em.emulation.unemulated == {} and em.emulation.counts == {"matmul": 2, "conv": 1}
    h = bf16_matmul(x, em.proj.weight.T, em.proj.bias)  # the swapped Linear's (dequantized) weight
    cols = F.unfold(F.pad(h.view(-1, 2, 4), (1, 1)).unsqueeze(2), (1, 3)).transpose(1, 2)  # (2, 4, 6)
    c = bf16_matmul(cols, model.kernel.reshape(4, 6).T).transpose(1, 2).flatten(1)
    expected = bf16_matmul(h + c[:, :8], model.classifier.weight.T, model.classifier.bias)
    assert torch.equal(em(x), expected)


@pytest.mark.parametrize("sa_dtype", ["bfloat16", "float32"])
def test_atleus_lora_branches_run_on_the_systolic_tier(sa_dtype):
    model = tiny_gpt2(layers=1, d=32, heads=2, vocab=50, positions=16)
    em = emulate(model, "atleus", lora_rank=4, sa_dtype=sa_dtype)
    c_attn = em.transformer.h[0].attn.c_attn
    with torch.no_grad():
        c_attn.lora_b.normal_(generator=torch.Generator().manual_seed(6))
        x = torch.randn(2, 5, 32, generator=G)
        b = c_attn.lora_b * c_attn.lora_mask
        if sa_dtype == "bfloat16":
            branch = bf16_matmul(bf16_matmul(x, c_attn.lora_a.t()), b.t())
        else:
            branch = (x @ c_attn.lora_a.t()) @ b.t()
        c_attn.lora_scale, scale = 0.0, c_attn.lora_scale
        crossbar_only = c_attn(x)
        c_attn.lora_scale = scale
        assert torch.equal(c_attn(x), crossbar_only + scale * branch)
