"""Target "flexisaga" through emulate(): pruning per layer, fixed masks, option validation."""

import math

import pytest
import torch

from numerics.nn import emulate
from numerics.sparse_linear import SparseLinear
from tests.models import SENTENCES, TinyTransformer, embed, minilm


def test_prunes_every_block_linear_to_the_requested_sparsity():
    model = TinyTransformer()
    em = emulate(model, "flexisaga", sparsity=0.5, tile=(8, 8), accumulation="fast")
    report = em.emulation.details["sparsity"]
    assert set(report) == {"qkv", "out", "ff.0", "ff.2"}
    assert all(r.vector_sparsity == 0.5 for r in report.values())
    assert em.emulation.swapped == {"Linear -> SparseLinear": 4}
    assert isinstance(em.ff[0], SparseLinear) and type(model.ff[0]) is torch.nn.Linear
    for name in report:
        layer, dense = em.get_submodule(name), model.get_submodule(name).weight
        assert dense.count_nonzero() == dense.numel()  # the original is untouched
        assert torch.equal(layer.weight[layer.mask], dense[layer.mask])
        assert (layer.weight[~layer.mask] == 0).all()
    tokens = torch.randint(0, 50, (2, 5))
    assert not torch.equal(em(tokens), model(tokens))


def test_zero_sparsity_is_bit_identical_and_masks_stay_fixed():
    model = TinyTransformer()
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    same = emulate(model, "flexisaga", sparsity=0.0, accumulation="fast")
    assert torch.equal(same(tokens), model(tokens))
    em = emulate(model, "flexisaga", sparsity=0.75, tile=(4, 4), accumulation="fast")
    opt = torch.optim.AdamW(em.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        em(tokens).pow(2).mean().backward()
        opt.step()
    for name, r in em.emulation.details["sparsity"].items():
        layer = em.get_submodule(name)
        assert (layer.weight[~layer.mask] == 0).all() and (~layer.mask).float().mean().item() == r.element_sparsity
        assert (layer.weight[layer.mask] != model.get_submodule(name).weight[layer.mask]).any()  # it trained


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"tile": (0, 16)}, "tile"),
        ({"vector": "diagonal"}, "vector"),
        ({"cycles": 3}, "cycles"),
        ({"heads": 3}, "heads"),
        ({"auto_tokens": 0}, "auto_tokens"),
    ],
)
def test_bad_options_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        emulate(TinyTransformer(), "flexisaga", **bad)


def test_auto_orientation_uses_the_cost_models_cycles():
    """vector="auto" works from emulate() alone: each layer keeps the orientation whose pruned weight
    the cost model's best sparse dataflow runs faster at M = auto_tokens (row on a tie)."""
    from hwmodels.config import fitted_config
    from hwmodels.flexisaga import FLEXISAGA
    from hwmodels.systolic import SPARSE, SparsePattern, sparse_gemm_cycles
    from numerics.sparsity import prune_layer

    alpha = fitted_config(FLEXISAGA, "flexisaga").fold_overhead

    model = TinyTransformer()
    em = emulate(model, "flexisaga", vector="auto", sparsity=0.5, tile=(8, 8), auto_tokens=16, accumulation="fast")
    chosen = {name: r.vector for name, r in em.emulation.details["sparsity"].items()}
    assert set(chosen.values()) <= {"row", "col"}
    for name, vector in chosen.items():
        w = model.get_submodule(name).weight.detach().T
        cycles = {}
        for v in ("row", "col"):
            pruned = prune_layer(w, 0.5, tile=(8, 8), vector=v).weight
            pattern = SparsePattern.from_mask(pruned, 8, 8)
            cycles[v] = min(sparse_gemm_cycles(16, pattern, d, fold_overhead=alpha) for d in SPARSE)
        assert vector == ("col" if cycles["col"] < cycles["row"] else "row")


def test_minilm_cosine_falls_with_sparsity():
    """One-shot pruning without fine-tuning (measured mean cosine: 0.25 -> 0.50, 0.5 -> 0.29,
    0.75 -> 0.20): bit-identical at 0, then monotone in the sparsity."""
    model, tok = minilm()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        fp32 = embed(model, batch)
        cosine = {}
        for s in (0.0, 0.25, 0.5, 0.75):
            em = emulate(model, "flexisaga", sparsity=s, accumulation="fast")
            report = em.emulation.details["sparsity"]
            assert len(report) == 36  # 6 layers x (Q, K, V, O, FFN1, FFN2); the pooler stays dense
            assert type(em.pooler.dense) is torch.nn.Linear
            assert all(r.vectors_pruned == math.floor(s * r.vectors_total) for r in report.values())
            emb = embed(em, batch)
            if s == 0.0:
                assert torch.equal(emb, fp32)
            cosine[s] = (emb * fp32).sum(-1).mean().item()
    assert cosine[0.25] < 0.999  # pruning did change the model
    assert cosine[0.25] > cosine[0.5] > cosine[0.75]


def test_minilm_pe_order_matches_fast_path():
    model, tok = minilm()
    batch = tok(SENTENCES[:3], padding=True, return_tensors="pt")  # the k loop is slow
    with torch.no_grad():
        fast = embed(emulate(model, "flexisaga", accumulation="fast"), batch)
        seq = embed(emulate(model, "flexisaga", accumulation="sequential"), batch)
    assert not torch.equal(fast, seq)  # a different summation order does change bits
    assert (fast * seq).sum(-1).min() > 1 - 1e-5


def test_minilm_keeps_more_with_the_activation_criterion():
    from hwmodels.study import load_sentences

    model, tok = minilm()
    calibration = [dict(tok(SENTENCES, padding=True, return_tensors="pt"))]  # not the sentences measured
    batch = tok(load_sentences(), padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = embed(model, batch)
        cosine = {}
        for criterion, extra in (("l2", {}), ("activation", {"calibrate_with": calibration})):
            em = emulate(model, "flexisaga", sparsity=0.25, criterion=criterion, accumulation="fast", **extra)
            cosine[criterion] = (embed(em, batch) * ref).sum(-1).mean().item()
    # measured: l2 0.486, activation 0.792 (mean embedding cosine on the study's 25 sentences)
    assert cosine["l2"] < 0.55 and cosine["activation"] > 0.75


def test_minilm_keeps_its_embeddings_with_activation_pruning_and_reconstruction():
    from hwmodels.study import load_sentences
    from numerics.corpus import load_corpus

    model, tok = minilm()
    calibration = [dict(tok(load_corpus(limit=292), padding=True, return_tensors="pt"))]  # 292 other sentences
    batch = tok(load_sentences(), padding=True, return_tensors="pt")
    em = emulate(
        model,
        "flexisaga",
        sparsity=0.25,
        criterion="activation",
        reconstruct=True,
        calibrate_with=calibration,
        accumulation="fast",
    )
    with torch.no_grad():
        cosine = (embed(em, batch) * embed(model, batch)).sum(-1)
    # measured: mean 0.891, min 0.700 (one-shot activation pruning alone: 0.798)
    assert cosine.mean() > 0.85


def test_per_layer_sparsity_by_pattern_or_function():
    from hwmodels import estimate
    from hwmodels.workload import trace

    model = TinyTransformer()  # qkv 32->96, out 32->32, ff.0 32->64, ff.2 64->32
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    em = emulate(model, "flexisaga", sparsity={"ff.*": 0.5, "qkv": 0.25}, tile=(8, 8), accumulation="fast")
    report = em.emulation.details["sparsity"]
    # row vectors of 8 along N: K·N/8 vectors per layer; "out" matches no pattern and stays dense
    assert {name: (r.vectors_total, r.vectors_pruned) for name, r in report.items()} == {
        "qkv": (32 * 12, 96),  # floor(0.25 · 384)
        "out": (32 * 4, 0),
        "ff.0": (32 * 8, 128),  # floor(0.5 · 256)
        "ff.2": (64 * 4, 128),
    }
    by_width = emulate(model, "flexisaga", sparsity=lambda name, m: 0.5 if m.in_features == 64 else 0.0, tile=(8, 8))
    assert [r.vectors_pruned for r in by_width.emulation.details["sparsity"].values()] == [0, 0, 0, 128]
    dense = emulate(model, "flexisaga", sparsity=0.0, tile=(8, 8))
    assert estimate(em, tokens).total_cycles < estimate(dense, tokens).total_cycles
    with pytest.raises(ValueError, match="needs the emulated model's masks"):
        estimate(trace(model, tokens), "flexisaga", sparsity={"*": 0.5})
    for bad in ({"ff.*": 1.0}, {3: 0.5}, [0.5]):
        with pytest.raises(ValueError, match="sparsity"):
            emulate(model, "flexisaga", sparsity=bad)
    with pytest.raises(ValueError, match="sparsity"):
        emulate(model, "flexisaga", sparsity=lambda name, m: 1.5)


def test_global_allocation_keeps_the_overall_sparsity_and_prunes_where_little_is_carried():
    from hwmodels import estimate
    from hwmodels.workload import trace

    model = TinyTransformer()  # qkv 32->96, out 32->32, ff.0 32->64, ff.2 64->32: 384 + 128 + 256 + 256 vectors
    with torch.no_grad():  # concentrate out's weight in 4 of its 32 input features: little to prune there
        model.out.weight.mul_(0.01)[:, :4] *= 1000.0
    options = dict(sparsity=0.5, tile=(8, 8), accumulation="fast")
    uniform = emulate(model, "flexisaga", **options).emulation.details["sparsity"]
    shared = emulate(model, "flexisaga", allocation="global", **options).emulation.details["sparsity"]
    total = sum(r.vectors_total for r in shared.values())
    assert total == 1024 and sum(r.vectors_pruned for r in shared.values()) == 512  # floor(0.5 · 1024)
    assert sum(r.vectors_pruned for r in uniform.values()) == 192 + 64 + 128 + 128 == 512
    # out's 28 scaled-down input rows (4 vectors of 8 each) carry about 1e-8 of its energy each: all 112 go
    # before any vector of another layer; its 4 large rows stay. Uniform takes floor(0.5 · 128) = 64 of out.
    assert shared["out"].vectors_pruned == 28 * 4 and uniform["out"].vectors_pruned == 64
    assert all(shared[n].vectors_pruned <= math.floor(0.9 * shared[n].vectors_total) for n in shared)  # the cap
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="allocation='global'"):
        estimate(trace(model, tokens), "flexisaga", sparsity=0.5, allocation="global")
    with pytest.raises(ValueError, match="allocation must be one of uniform, global; got 'layer'"):
        emulate(model, "flexisaga", allocation="layer")
    with pytest.raises(ValueError, match="per-layer sparsity sets them"):
        emulate(model, "flexisaga", sparsity={"ff.*": 0.5}, allocation="global")
