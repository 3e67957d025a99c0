"""Layer-wise reconstruction of pruned weights (numerics.reconstruct): the refit is the damped least-squares
solution, computed here with numpy on the same rows, layer by layer in execution order."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from numerics.reconstruct import check_damping
from numerics.sparse_linear import sparsify_


def _refit_by_hand(x, target_x, weight_kn, mask_kn, damping):
    """numpy: each output column's kept weights from the ridge normal equations."""
    x, target = np.asarray(x, np.float64), np.asarray(target_x, np.float64) @ np.asarray(weight_kn, np.float64)
    h = x.T @ x
    lam = damping * np.mean(np.diag(h))
    out = np.zeros(weight_kn.shape)
    for n in range(weight_kn.shape[1]):
        kept = np.flatnonzero(np.asarray(mask_kn[:, n]))
        if kept.size:
            a = h[np.ix_(kept, kept)] + lam * np.eye(kept.size)
            out[kept, n] = np.linalg.solve(a, x[:, kept].T @ target[:, n])
    return out


def test_one_layer_is_refitted_to_its_dense_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8, bias=False))
    mixing = torch.randn(12, 12)  # correlated features: the kept inputs can stand in for the pruned ones
    batches = [torch.randn(40, 12) @ mixing, torch.randn(25, 12) @ mixing]
    plain = copy.deepcopy(model)
    sparsify_(plain, sparsity=0.5, tile=(4, 4), heads=())
    refit = copy.deepcopy(model)
    sparsify_(refit, sparsity=0.5, tile=(4, 4), heads=(), calibrate_with=batches, reconstruct=True, damping=0.05)
    x = torch.cat(batches).double()
    w = model[0].weight.detach().double().T
    want = _refit_by_hand(x, x, w, refit[0].mask.T, 0.05)
    np.testing.assert_allclose(refit[0].weight.detach().double().T.numpy(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(refit[0].mask, plain[0].mask)  # the masks are the pruner's; only values change
    assert bool((refit[0].weight[~refit[0].mask] == 0).all())
    dense = x @ w
    error = {
        name: (x @ m[0].weight.detach().double().T - dense).square().sum()
        for name, m in (("plain", plain), ("refit", refit))
    }
    assert error["refit"] < 0.5 * error["plain"]  # measured: 194 against 430


def test_layers_are_refitted_in_order_on_the_pruned_models_inputs():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Tanh(), nn.Linear(8, 4, bias=False))
    batches = [torch.randn(64, 8)]
    pruned = copy.deepcopy(model)
    sparsify_(pruned, sparsity=0.5, tile=(4, 4), heads=(), calibrate_with=batches, reconstruct=True)
    x = batches[0].double()
    h_pruned = torch.tanh(x @ pruned[0].weight.detach().double().T)  # what the refitted first layer gives
    h_dense = torch.tanh(x @ model[0].weight.detach().double().T)
    want = _refit_by_hand(h_pruned, h_dense, model[2].weight.detach().double().T, pruned[2].mask.T, 0.01)
    np.testing.assert_allclose(pruned[2].weight.detach().double().T.numpy(), want, rtol=1e-5, atol=1e-6)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8, bias=False)

    def forward(self, input_ids, attention_mask):
        return self.proj(self.embed(input_ids))


def test_padding_rows_do_not_count():
    torch.manual_seed(2)
    model = Tokens()
    ids = torch.randint(1, 20, (3, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    pruned = copy.deepcopy(model)
    sparsify_(
        pruned,
        sparsity=0.5,
        tile=(4, 4),
        heads=(),
        calibrate_with=[{"input_ids": ids, "attention_mask": mask}],
        reconstruct=True,
    )
    x = model.embed(ids)[mask.bool()].detach().double()  # 12 real tokens of 18
    want = _refit_by_hand(x, x, model.proj.weight.detach().double().T, pruned.proj.mask.T, 0.01)
    np.testing.assert_allclose(pruned.proj.weight.detach().double().T.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damping", [0, -1.0, float("inf"), "0.1", True])
def test_damping_is_checked(damping):
    with pytest.raises(ValueError, match="damping"):
        check_damping(damping)


def test_a_convolution_is_refitted_on_its_im2col_rows():
    import torch.nn.functional as F

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    x = torch.randn(2, 3, 6, 6)
    pruned = copy.deepcopy(model)
    sparsify_(pruned, sparsity=0.5, tile=(4, 4), heads=(), calibrate_with=[x], reconstruct=True)
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 27).double()  # (2·36, K = 27)
    w = model[0].weight.detach().double().reshape(8, 27).T
    mask = pruned[0].mask.reshape(8, 27).T
    want = _refit_by_hand(cols, cols, w, mask, 0.01)
    got = pruned[0].weight.detach().double().reshape(8, 27).T
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_activation_norms_leave_padding_out():
    from numerics.sparse_linear import input_norms

    torch.manual_seed(4)
    model = Tokens()
    ids = torch.randint(1, 20, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    norms = input_norms(model, {"proj": model.proj}, [{"input_ids": ids, "attention_mask": mask}])
    real = model.embed(ids)[mask.bool()].detach().double()  # 7 real tokens of 10
    torch.testing.assert_close(norms["proj"], real.norm(dim=0), rtol=1e-12, atol=0)


def test_reconstruction_sees_inference_activations_and_restores_modes():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 8, bias=False)).train()
    batches = [torch.randn(32, 8)]
    pruned = copy.deepcopy(model)
    sparsify_(pruned, sparsity=0.5, tile=(4, 4), heads=(), calibrate_with=batches, reconstruct=True)
    x = batches[0].double()  # dropout off: the rows are the inputs themselves
    want = _refit_by_hand(x, x, model[1].weight.detach().double().T, pruned[1].mask.T, 0.01)
    np.testing.assert_allclose(pruned[1].weight.detach().double().T.numpy(), want, rtol=1e-5, atol=1e-6)
    assert pruned.training and pruned[0].training
