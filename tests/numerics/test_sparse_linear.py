"""FlexiSAGA drop-in layers: SparseLinear and flexisaga_model (spec flexisaga.md §2.2-2.3)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics.sparse_linear import LayerSparsity, SparseLinear, flexisaga_model
from numerics.sparsity import FlexiSAGAConfig, prune, sparse_gemm


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(11, 24)
        self.block = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 24, bias=False))
        self.classifier = nn.Linear(24, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, ids):
        return self.classifier(self.block(self.embed(ids)))


IDS = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])


def test_prunes_block_linears_only_and_reports_exact_counts():
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = flexisaga_model(model, sparsity=0.5, tile=(8, 16), vector="row")
    assert set(report) == {"block.0", "block.2"}
    # block.0: W is (K, N) = (24, 40); row vectors 1x16: 24 * ceil(40/16) = 72, prune 36
    assert report["block.0"] == LayerSparsity((24, 40), "row", 36, 72, new.block[0].sparsity)
    assert report["block.2"].vectors_total == 40 * math.ceil(24 / 16)
    assert report["block.0"].vector_sparsity == 0.5
    assert isinstance(new.block[0], SparseLinear) and type(new.classifier) is nn.Linear
    assert torch.equal(new.embed.weight, model.embed.weight)
    # the mask is prune()'s on W = weight.T
    _, mask = prune(model.block[0].weight.T, 0.5, tile=(8, 16))
    assert torch.equal(new.block[0].mask, mask.T)
    assert new.block[0].sparsity == (~mask).sum().item() / mask.numel()
    assert 36 * 8 / 960 <= new.block[0].sparsity <= 36 * 16 / 960  # edge vectors are 1x8
    for k, v in model.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])


def test_sparsity_zero_fast_is_bit_identical_to_the_dense_model():
    model = Tiny()
    new, report = flexisaga_model(model, sparsity=0.0, accumulation="fast", heads=())
    assert len(report) == 3 and all(r.vectors_pruned == 0 for r in report.values())
    assert torch.equal(new(IDS), model(IDS))


def test_sequential_forward_is_the_pe_gemm_plus_bias():
    model = Tiny()
    new, _ = flexisaga_model(model, sparsity=0.5, tile=(4, 4), vector="col")
    fast, _ = flexisaga_model(model, sparsity=0.5, tile=(4, 4), vector="col", accumulation="fast")
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(1))
    layer = new.block[0]
    want = sparse_gemm(x.reshape(10, 24), layer.weight.detach().T.contiguous()) + layer.bias
    assert torch.equal(layer(x), want.reshape(2, 5, 40))
    seq_out, fast_out = new(IDS), fast(IDS)
    torch.testing.assert_close(seq_out, fast_out, rtol=1e-5, atol=1e-4)


def test_without_a_gradient_the_kept_weight_follows_every_change():
    # No gradient wanted: the layer keeps its masked float32 weight and plan. Each output must stay the PE
    # product of the weight and mask as they are now: after an in-place edit, a mask edit, and Module.to()
    # (which puts new data into the same Parameter, its version unchanged).
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(70, 48, generator=g), torch.randn(70, generator=g)
    _, mask = prune(w.T, 0.5, tile=(16, 16), vector="col")
    layer = SparseLinear(w, mask.T, b)
    x = torch.randn(3, 66, 48, generator=g)

    def want():
        weight = torch.where(layer.mask, layer.weight, 0).float().T.contiguous()
        y = sparse_gemm(x.to(layer.weight.dtype).float().reshape(-1, 48), weight) + layer.bias.float()
        return y.reshape(3, 66, 70).to(layer.weight.dtype)

    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(layer(x), want())
        layer.weight.mul_(-2.0)
        assert torch.equal(layer(x), want())
        layer.mask[:, :16] = False
        assert torch.equal(layer(x), want())
        layer.to(torch.bfloat16)
        x = x.bfloat16()
        assert torch.equal(layer(x), want())
    assert torch.equal(layer(x), want())  # with a gradient: the autograd path, same bits


@pytest.mark.parametrize("accumulation", ["sequential", "fast"])
@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_masked_fine_tuning_keeps_zeros_zero(accumulation, opt):
    new, _ = flexisaga_model(Tiny(), sparsity=0.75, tile=(8, 8), accumulation=accumulation)
    sparse = [m for m in new.modules() if isinstance(m, SparseLinear)]
    start = [m.weight.detach().clone() for m in sparse]
    optim = (
        torch.optim.AdamW(new.parameters(), lr=1e-2, weight_decay=0.1)
        if opt == "adamw"
        else torch.optim.SGD(new.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.1)
    )
    target = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        optim.zero_grad()
        ((new(IDS) - target) ** 2).mean().backward()
        for m in sparse:
            assert (m.weight.grad[~m.mask] == 0).all()
            assert (m.weight.grad[m.mask] != 0).any()
        optim.step()
    for m, w0 in zip(sparse, start):
        assert (m.weight[~m.mask].view(torch.int32) == 0).all()  # +0, bit for bit
        assert not torch.equal(m.weight[m.mask], w0[m.mask])  # kept weights did train


def test_sequential_gradients_match_fast_gradients():
    grads = []
    for accumulation in ("sequential", "fast"):
        new, _ = flexisaga_model(Tiny(), sparsity=0.5, tile=(8, 8), accumulation=accumulation)
        new(IDS).sum().backward()
        grads.append([p.grad for p in new.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_head_patterns_callables_and_shared_linears():
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(8, 2))
    new, report = flexisaga_model(model, sparsity=0.5, tile=(4, 4), heads=("3",))
    assert list(report) == ["0"] and new[0] is new[2] and type(new[3]) is nn.Linear
    _, report = flexisaga_model(model, sparsity=0.5, tile=(4, 4), heads=lambda name, m: False)
    assert list(report) == ["0", "3"]
    new, report = flexisaga_model(model, sparsity=0.5, tile=(4, 4), heads="[03]")
    assert report == {} and new[2] is new[0]  # a shared Linear skipped under one name stays dense


def test_multihead_attention_out_proj_is_left_alone():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    new, report = flexisaga_model(nn.Sequential(mha), sparsity=0.5, tile=(4, 4))
    assert report == {}
    x = torch.randn(1, 3, 8)
    assert torch.equal(new[0](x, x, x)[0], mha(x, x, x)[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), "sparsity"),
        (dict(sparsity=-0.5), "sparsity"),
        (dict(tile=(0, 4)), "tile"),
        (dict(tile=(4, 4, 4)), "tile"),
        (dict(vector="diag"), "vector"),
        (dict(criterion="l3"), "criterion"),
        (dict(accumulation="tree"), "accumulation"),
        (dict(fused_mac="yes"), "fused_mac"),
        (dict(vector="auto"), "cycles"),
        (dict(heads=[3]), "heads"),
        (dict(auto_tokens=0), "auto_tokens"),
    ],
)
def test_flexisaga_model_rejects_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flexisaga_model(Tiny(), **kwargs)


def test_invalid_inputs_to_layers():
    with pytest.raises(TypeError, match="model"):
        flexisaga_model(lambda x: x)
    new, _ = flexisaga_model(Tiny(), sparsity=0.5, tile=(4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        new.block[0](torch.ones(2, 24, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point"):
        SparseLinear(torch.ones(2, 2, dtype=torch.int32), torch.ones(2, 2, dtype=torch.bool), None)
    with pytest.raises(ValueError, match="dtype"):
        SparseLinear(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), None, FlexiSAGAConfig(dtype="int32"))


def test_activation_criterion_measures_each_layers_inputs_on_the_calibration_batches():
    from numerics.sparse_linear import sparsify_
    from numerics.sparsity import vector_scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    batches = [torch.randn(5, 8) * torch.tensor([20.0, 1, 1, 1, 1, 1, 1, 1]), torch.randn(3, 8)]
    # the inputs each Linear sees, computed here with the dense model
    x0 = torch.cat(batches)
    x2 = torch.relu(model[0](x0)).detach()
    norms = [x0.double().norm(dim=0), x2.double().norm(dim=0)]
    pruned = copy.deepcopy(model)
    report = sparsify_(pruned, sparsity=0.5, tile=(4, 4), criterion="activation", calibrate_with=batches, heads=())
    for i, a in zip((0, 2), norms):
        scores = vector_scores(model[i].weight.detach().T, (4, 4), "row", "activation", a).flatten()
        gone = set(torch.argsort(scores, stable=True)[: report[str(i)].vectors_pruned].tolist())
        kept = pruned[i].mask.T[:, ::4]  # (K, N/4): each row vector's first element
        assert set((~kept).flatten().nonzero().flatten().tolist()) == gone
    # feature 0 of the first layer's input is 20x larger: none of its vectors goes
    assert pruned[0].mask.T[0].all()
    with pytest.raises(ValueError, match="need calibrate_with"):
        sparsify_(copy.deepcopy(model), criterion="activation")
    with pytest.raises(ValueError, match="only used by criterion='activation' or reconstruct=True"):
        sparsify_(copy.deepcopy(model), calibrate_with=batches)


def test_activation_criterion_on_a_convolution_uses_its_im2col_features():
    from numerics.sparse_linear import FeatureNorms

    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.randn(2, 2, 5, 5)
    obs = FeatureNorms(conv)
    obs.observe(x)
    cols = F.unfold(x, 3, padding=1)  # (N, C*9, L), the GEMM's K = 18 features
    torch.testing.assert_close(obs.norms(), cols.double().square().sum((0, 2)).sqrt(), rtol=1e-12, atol=0)
