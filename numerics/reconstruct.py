"""Layer-wise reconstruction of pruned weights (the SparseGPT/OBS family, arXiv 2301.00774): once a
layer's mask is fixed, its kept weights are refitted so that the layer reproduces the dense model's
output on calibration activations.

Layers are refitted in execution order, each on the inputs it receives from the model pruned and refitted
so far, so later layers compensate for earlier ones. For a layer with input rows X (the rows the model's
pruned layers see), dense-model input rows X_d and dense weight W (K × N), each output column n is the
damped least-squares solution on its kept inputs S_n:

    W[S_n, n] = (X_Sᵀ X_S + λ I)⁻¹ X_Sᵀ (X_d W[:, n]),   λ = damping · mean(diag(Xᵀ X)),

in float64; pruned weights stay +0. Columns with the same kept set share one solve (a row vector spans C
columns). Padding tokens do not count: for a batch given as a dict with an ``attention_mask`` (B, L), only
the rows of real tokens enter X.
"""

from __future__ import annotations

import torch
from torch import nn

from numerics.conv import im2col, module_geometry, module_input
from numerics.emulation import reference_arithmetic
from numerics.quant import call_with

__all__ = ["reconstruct_", "check_damping", "gemm_rows", "padding_mask"]


def check_damping(damping) -> float:
    """ValueError unless ``damping`` is a finite number > 0."""
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 < damping < float("inf"):
        raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
    return float(damping)


def gemm_rows(layer: nn.Module, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The GEMM input rows (M, K) of ``layer`` (a Linear or a convolution) for its input ``x``, float64:
    a Linear's tokens, without those ``keep`` (B, L) marks as padding; a convolution's im2col rows, its
    groups' rows stacked."""
    if isinstance(layer, nn.Linear) or hasattr(layer, "in_features"):
        if keep is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(keep.shape):
            x = x[keep]
        return x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
    batched = x if x.dim() == len(layer.kernel_size) + 2 else x.unsqueeze(0)
    cols, _ = im2col(
        module_input(layer, batched.detach().to(torch.float64)), tuple(layer.kernel_size), module_geometry(layer)
    )
    return cols.reshape(-1, cols.shape[-1])


def padding_mask(batch) -> torch.Tensor | None:
    """The real tokens (B, L) of a batch given as a dict with an ``attention_mask``, else None."""
    if isinstance(batch, dict) and batch.get("attention_mask") is not None:
        return batch["attention_mask"].bool()
    return None


class _Reached(Exception):
    """Raised by the hook that captured a layer's input: the rest of the forward pass is not needed."""


def _capture(store: dict, key: str):
    def hook(_module, args):
        store[key] = args[0]
        raise _Reached

    return hook


def _run(net: nn.Module, batch) -> None:
    """Run ``net`` on one batch, up to the hooked layer (whose hook raises :class:`_Reached`)."""
    try:
        call_with(net, batch)
    except _Reached:
        pass


def _gram(model: nn.Module, name: str, batches, partner: nn.Module | None = None):
    """Xᵀ X and Xᵀ X_p of layer ``name``'s input over ``batches`` (X from ``model``, X_p from ``partner``,
    a model of the same structure, on the same rows; X_p = X without one)."""
    layer = model.get_submodule(name)
    other = partner.get_submodule(name) if partner is not None else None
    seen: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(_capture(seen, "x"))]
    if other is not None:
        hooks.append(other.register_forward_pre_hook(_capture(seen, "p")))
    xtx = xtp = None
    nets = (model, partner) if partner is not None else (model,)
    modes = {m: m.training for net in nets for m in net.modules()}
    try:
        for net in nets:
            net.eval()  # inference activations: no dropout
        with torch.no_grad(), reference_arithmetic():
            for batch in batches:
                keep = padding_mask(batch)
                seen.clear()
                for net in nets:
                    _run(net, batch)
                if "x" not in seen:
                    raise ValueError(f"calibrate_with batches do not reach {name!r}: nothing to reconstruct from")
                x = gemm_rows(layer, seen["x"], keep)
                p = gemm_rows(layer, seen["p"], keep) if other is not None else x
                xtx = x.T @ x if xtx is None else xtx + x.T @ x
                xtp = x.T @ p if xtp is None else xtp + x.T @ p
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if xtx is None:
        raise ValueError(f"calibrate_with ran no batch through {name!r}: nothing to reconstruct from")
    return xtx, xtp


def _refit(weight_kn: torch.Tensor, mask_kn: torch.Tensor, xtx: torch.Tensor, xty: torch.Tensor, damping: float):
    """The refitted (K, N) float64 weight: per unique kept set, one damped solve."""
    lam = damping * float(xtx.diagonal().mean()) if float(xtx.diagonal().mean()) > 0 else damping
    out = torch.zeros_like(weight_kn, dtype=torch.float64)
    patterns, which = torch.unique(mask_kn.T, dim=0, return_inverse=True)
    for i, pattern in enumerate(patterns):
        kept = pattern.nonzero().flatten()
        if kept.numel() == 0:
            continue
        columns = (which == i).nonzero().flatten()
        h = xtx[kept][:, kept] + lam * torch.eye(kept.numel(), dtype=torch.float64, device=xtx.device)
        out[kept[:, None], columns] = torch.linalg.solve(h, xty[kept][:, columns])
    return out


def reconstruct_(model: nn.Module, dense: nn.Module, names: list[str], batches, *, damping: float = 0.01) -> None:
    """Refit, in place and in order, the kept weights of the pruned layers ``names`` of ``model``
    (:class:`~numerics.sparse_linear.SparseLinear` or a groups = 1 :class:`~numerics.sparse_linear.SparseConv`)
    to the outputs of the same layers of ``dense`` (the model before pruning) on ``batches``."""
    damping = check_damping(damping)
    for name in names:
        layer = model.get_submodule(name)
        dense_layer = dense.get_submodule(name)
        w = dense_layer.weight.detach().to(torch.float64)
        w_kn = w.T if w.dim() == 2 else w.reshape(w.shape[0], -1).T
        mask_kn = layer.mask.T if layer.mask.dim() == 2 else layer.mask.reshape(layer.mask.shape[0], -1).T
        xtx, xtd = _gram(model, name, batches, partner=dense)
        refit = _refit(w_kn, mask_kn, xtx, xtd @ w_kn, damping)
        new = refit.T if w.dim() == 2 else refit.T.reshape(layer.weight.shape)
        with torch.no_grad():
            layer.weight.copy_(new.to(layer.weight.dtype))
