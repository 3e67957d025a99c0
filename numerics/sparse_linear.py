"""Drop-in FlexiSAGA layers: a pruned ``nn.Linear`` with a fixed mask, and whole-model conversion.

Spec: ``flexisaga.md`` §2.3 (what is pruned) and §2.2 (how the PEs compute).
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from numerics.emulation import in_reference_arithmetic
from numerics.sparsity import (
    FLEXISAGA_16X16,
    CyclesFn,
    FlexiSAGAConfig,
    check_tile,
    prune_layer,
    sparse_gemm,
)

DENSE_BY_DEFAULT = ("classifier", "lm_head", "head", "pooler", "cls", "score", "qa_outputs")
"""Name components of the Linears left dense by default: classifier, LM and task heads, the
pooler (spec §2.3, assumption: only the transformer blocks' static weights are pruned).
Embeddings are lookups, not GEMMs on the array, and are never touched."""


@dataclass(frozen=True)
class LayerSparsity:
    """What pruning did to one Linear."""

    shape: tuple[int, int]
    """(K, N) = (in_features, out_features)."""
    vector: str
    """Pruning vector used (``"auto"`` resolved)."""
    vectors_pruned: int
    """floor(sparsity · vectors_total)."""
    vectors_total: int
    """Tile-aligned vectors in the layer."""
    element_sparsity: float
    """Fraction of the weight's elements masked (differs from the vector fraction at edges)."""

    @property
    def vector_sparsity(self) -> float:
        """vectors_pruned / vectors_total."""
        return self.vectors_pruned / self.vectors_total


class _SequentialLinear(torch.autograd.Function):
    """Forward: the PEs' k-ordered GEMM. Backward: the gradient of the exact product X·W
    (straight-through: rounding is not differentiated)."""

    @staticmethod
    def forward(ctx, x2, weight_nk, config):
        ctx.save_for_backward(x2, weight_nk)
        return sparse_gemm(x2, weight_nk.T, config)

    @staticmethod
    def backward(ctx, grad):
        x2, weight_nk = ctx.saved_tensors
        return grad @ weight_nk, grad.T @ x2, None


class SparseLinear(nn.Module):
    """An ``nn.Linear`` pruned once with a fixed tile-aligned mask, computed like FlexiSAGA's PEs.

    ``weight`` (N, K) and ``bias`` are parameters as in ``nn.Linear``; ``mask`` (N, K, bool, True =
    kept) is a buffer. The forward uses ``where(mask, weight, 0)``, so masked weights never act and
    their gradients are zero by construction: fine-tuning keeps them zero under any optimizer
    (momentum, Adam and weight decay all leave a zero weight with zero gradient at zero).
    ``accumulation="sequential"`` runs :func:`sparse_gemm` (bit-exact PE order, spec §2.2);
    ``"fast"`` runs ``F.linear``, equal up to the summation order. The bias is added once after
    the sum (assumption: the spec's GEMM has no bias). Only float32 is supported: ``int32`` PEs
    need an integer-quantised model.
    """

    emulates_itself = True
    """Its internal products are part of the emulation: ``emulate()`` leaves them alone."""
    emulated_kind = "linear"
    """What one call counts as in ``model.emulation.counts``."""

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None,
        config: FlexiSAGAConfig = FLEXISAGA_16X16,
    ):
        super().__init__()
        if config.dtype != "float32":
            raise ValueError(f"dtype must be 'float32' for SparseLinear, got {config.dtype!r}")
        if weight.dtype != torch.float32:
            raise TypeError(f"weight must be float32, got {weight.dtype}")
        if mask.dtype != torch.bool or mask.shape != weight.shape:
            raise ValueError(f"mask must be bool with the weight's shape {tuple(weight.shape)}")
        self.config = config
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
        # contiguous (N, K) like nn.Linear's, so that F.linear takes the same BLAS path
        self.weight = nn.Parameter(torch.where(mask, weight.detach(), zero).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.register_buffer("mask", mask.contiguous().clone())

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, config: FlexiSAGAConfig = FLEXISAGA_16X16, *, cycles: CyclesFn | None = None
    ) -> tuple[SparseLinear, LayerSparsity]:
        """Prune ``linear`` with ``config`` (its weight taken as W = weight.T, spec orientation)."""
        result = prune_layer(
            linear.weight.detach().T,
            config.sparsity,
            tile=config.tile,
            vector=config.vector,
            criterion=config.criterion,
            cycles=cycles,
            auto_tokens=config.auto_tokens,
        )
        module = cls(result.weight.T, result.mask.T, linear.bias, config)
        report = LayerSparsity(
            tuple(result.mask.shape), result.vector, result.vectors_pruned, result.vectors_total, module.sparsity
        )
        return module, report

    @property
    def sparsity(self) -> float:
        """Measured fraction of masked weight elements."""
        return (~self.mask).sum().item() / self.mask.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_reference_arithmetic():  # the model's own product (the weight holds the mask's zeros)
            return F.linear(x, self.weight, self.bias)
        if x.dtype != torch.float32:
            raise TypeError(f"input must be float32, got {x.dtype}")
        weight = torch.where(
            self.mask, self.weight, torch.zeros((), dtype=self.weight.dtype, device=self.weight.device)
        )
        if self.config.accumulation == "fast":
            return F.linear(x, weight, self.bias)
        y = _SequentialLinear.apply(x.reshape(-1, self.in_features), weight, self.config)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sparsity={self.sparsity:.4f}, "
            f"vector={self.config.vector!r}, tile={self.config.tile}"
        )


def check_skip(skip) -> None:
    """ValueError unless ``skip`` is a callable ``(name, module) -> bool`` or name patterns."""
    if callable(skip):
        return
    patterns = (skip,) if isinstance(skip, str) else skip
    if not isinstance(patterns, (tuple, list)) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"skip must be a callable (name, module) -> bool or name patterns, got {skip!r}")


def _skip_rule(skip) -> Callable[[str, nn.Linear], bool]:
    check_skip(skip)
    if callable(skip):
        return skip
    patterns = (skip,) if isinstance(skip, str) else tuple(skip)

    def rule(name: str, _module: nn.Linear) -> bool:
        parts = name.split(".") + [name]
        return any(fnmatch.fnmatchcase(part, p) for part in parts for p in patterns)

    return rule


def flexisaga_model(model: nn.Module, **options) -> tuple[nn.Module, dict[str, LayerSparsity]]:
    """A deep copy of ``model`` with its Linears pruned (see :func:`sparsify_`; same options).

    Returns ``(new_model, {qualified name: LayerSparsity})``. The input model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    new = copy.deepcopy(model)
    return new, sparsify_(new, **options)


def sparsify_(
    model: nn.Module,
    *,
    sparsity: float = FLEXISAGA_16X16.sparsity,
    tile=FLEXISAGA_16X16.tile,
    vector: str = FLEXISAGA_16X16.vector,
    criterion: str = FLEXISAGA_16X16.criterion,
    accumulation: str = FLEXISAGA_16X16.accumulation,
    fused_mac: bool = FLEXISAGA_16X16.fused_mac,
    skip: Iterable[str] | Callable[[str, nn.Linear], bool] = DENSE_BY_DEFAULT,
    cycles: CyclesFn | None = None,
    auto_tokens: int = FLEXISAGA_16X16.auto_tokens,
    config: FlexiSAGAConfig | None = None,
) -> dict[str, LayerSparsity]:
    """Replace, in place, every ``nn.Linear`` of ``model`` by a :class:`SparseLinear`.

    Only modules of type exactly ``nn.Linear`` are replaced (a subclass such as the ``out_proj``
    of ``nn.MultiheadAttention`` is read directly by its parent and stays dense).

    Linears for which ``skip`` holds stay dense: ``skip`` is a callable ``(name, module) -> bool``
    or fnmatch patterns matched against the qualified name and each of its dot-separated parts
    (default :data:`DENSE_BY_DEFAULT`; ``skip=()`` prunes every Linear). ``vector="auto"`` needs
    ``cycles`` (see :data:`numerics.sparsity.CyclesFn`) and compares at M = ``auto_tokens``.
    ``config``, a whole :class:`FlexiSAGAConfig`, replaces the individual array and pruning options.
    Returns ``{qualified name: LayerSparsity}``. Options are checked before anything changes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if config is None:
        rows, cols = check_tile(tile)
        config = FlexiSAGAConfig(
            rows=rows,
            cols=cols,
            sparsity=sparsity,
            vector=vector,
            criterion=criterion,
            accumulation=accumulation,
            fused_mac=fused_mac,
            auto_tokens=auto_tokens,
        )
    elif not isinstance(config, FlexiSAGAConfig):
        raise TypeError(f"config must be a FlexiSAGAConfig, got {type(config).__name__}")
    if config.vector == "auto" and not callable(cycles):
        raise ValueError("cycles must be a callable (weight, m, rows, cols) -> int when vector='auto'")
    rule = _skip_rule(skip)
    slots = [
        (parent, child_name, f"{name}.{child_name}" if name else child_name, child)
        for name, parent in model.named_modules(remove_duplicate=False)
        for child_name, child in parent._modules.items()  # with repeats, unlike named_children
        if type(child) is nn.Linear
    ]
    dense = {id(child) for _, _, full, child in slots if rule(full, child)}  # under any name
    report: dict[str, LayerSparsity] = {}
    replaced: dict[int, SparseLinear] = {}  # a Linear shared by two parents is pruned once
    for parent, child_name, full, child in slots:
        if id(child) in dense:
            continue
        if id(child) not in replaced:
            replaced[id(child)], report[full] = SparseLinear.from_linear(child, config, cycles=cycles)
        setattr(parent, child_name, replaced[id(child)])
    return report
