"""Target "flexisaga" through emulate(): pruning per layer, fixed masks, option validation."""

import pytest
import torch

from numerics.nn import emulate
from numerics.sparse_linear import SparseLinear
from tests.models import TinyTransformer


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


@pytest.mark.parametrize("bad,match", [({"sparsity": 1.0}, "sparsity"), ({"sparsity": -0.1}, "sparsity"),
                                       ({"tile": (0, 16)}, "tile"), ({"vector": "diagonal"}, "vector"),
                                       ({"vector": "auto"}, "cycles")])
def test_bad_options_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        emulate(TinyTransformer(), "flexisaga", **bad)
