"""Target "softex" on real models: all-MiniLM-L6-v2 (when installed) and a small transformer."""

import copy

import pytest
import torch

from numerics.emulation import UnemulatedWarning
from numerics.nn import emulate
from tests.models import SENTENCES, TinyTransformer, embed, minilm


@pytest.fixture(scope="module")
def minilm_run():
    model, tok = minilm()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    before = copy.deepcopy(model.state_dict())
    emulated = emulate(model, "softex")
    with torch.no_grad():
        ref = embed(model, batch)
        with pytest.warns(UnemulatedWarning, match="does not cover tanh"):  # the pooler's activation
            emu = embed(emulated, batch)
    return model, emulated, batch, before, ref, emu


def test_minilm_every_softmax_and_gelu_is_replaced(minilm_run):
    model, emulated, *_ = minilm_run
    layers = model.config.num_hidden_layers
    counts = emulated.emulation.counts
    assert counts["softmax"] == layers and counts["attention"] == layers and counts["gelu"] == layers
    # 6 Linears per layer, Q K^T and P V per layer, and the pooler
    assert counts["matmul"] == 8 * layers + 1
    assert emulated.emulation.unemulated == {"tanh": 1}  # the pooler's tanh: no SoftEx datapath


def test_minilm_original_is_unchanged(minilm_run):
    model, emulated, batch, before, ref, _ = minilm_run
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "emulation")
    with torch.no_grad():
        assert torch.equal(embed(model, batch), ref)


def test_minilm_embeddings_differ_but_stay_close(minilm_run):
    *_, ref, emu = minilm_run
    cos = (ref * emu).sum(-1)
    assert not torch.equal(ref, emu)
    assert cos.min() > 0.999, cos  # measured: min 0.99997 on these sentences
    # the ranking of pairwise similarities survives: each sentence's nearest neighbour is unchanged
    sim_ref, sim_emu = ref @ ref.T, emu @ emu.T
    sim_ref.fill_diagonal_(-1)
    sim_emu.fill_diagonal_(-1)
    assert torch.equal(sim_ref.argmax(1), sim_emu.argmax(1))


def test_minilm_backward_pass(minilm_run):
    _, emulated, batch, *_ = minilm_run
    small = {k: v[:2] for k, v in batch.items()}
    emulated.train()
    try:
        embed(emulated, small).sum().backward()
    finally:
        emulated.eval()
    grads = [p.grad for p in emulated.parameters() if p.requires_grad]
    assert sum(g is not None for g in grads) > 0.9 * len(grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    emulated.zero_grad(set_to_none=True)


def test_small_transformer_fine_tunes_under_emulation():
    torch.manual_seed(0)
    model = emulate(TinyTransformer(), "softex")
    tokens = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(1))
    target = torch.randn(4, 9, 32, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (model(tokens) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model.emulation.counts["softmax"] == 1 and model.emulation.counts["gelu"] == 1
