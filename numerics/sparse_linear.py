"""Drop-in FlexiSAGA layers: a pruned ``nn.Linear`` and a pruned convolution with fixed masks, and
whole-model conversion.

Spec: ``flexisaga.md`` §2.3 (what is pruned: CONV and FC operators), §2.2 (how the PEs compute) and §5
(convolutions as im2col GEMMs, :mod:`numerics.conv`). The PEs compute in FP32 whatever the model's
dtype: a bfloat16 or float16 model's activations and weights enter the array converted to FP32 and the
result returns in the model's dtype.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from numerics.conv import conv_as_gemm, copy_conv_attributes, is_depthwise, module_input
from numerics.derived import derived
from numerics.emulation import in_reference_arithmetic
from numerics.formats import fma_f32
from numerics.heads import HEADS, head_rule
from numerics.kernels import available, pe_gemm, pe_plan
from numerics.quant import run_batches
from numerics.reconstruct import check_damping, gemm_rows, padding_mask, reconstruct_
from numerics.recovery import Recovery, recover  # noqa: F401  (public here: the pruning workflow's last step)
from numerics.sparsity import (
    ALLOCATIONS,
    FLEXISAGA_16X16,
    CyclesFn,
    FlexiSAGAConfig,
    check_sparsity,
    check_tile,
    global_allocation,
    prune_layer,
    sparse_gemm,
    stored_elements,
)

DENSE_BY_DEFAULT = HEADS
"""The layers left dense by default: the heads (:data:`numerics.heads.HEADS`, the one rule of every
target). Embeddings are lookups, not GEMMs on the array, and are never touched. Depthwise convolutions
stay dense too (assumption: their GEMM view has one output channel per group, so a tile-aligned vector
would be a single weight)."""


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


class _SequentialGroups(torch.autograd.Function):
    """Forward: G independent k-ordered GEMMs (a grouped convolution's im2col products). Backward: the
    gradient of the exact products (straight-through)."""

    @staticmethod
    def forward(ctx, x, weight, config):
        ctx.save_for_backward(x, weight)
        return grouped_sequential_gemm(x, weight, config)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight.transpose(-1, -2), x.transpose(-1, -2) @ grad, None


def grouped_sequential_gemm(x: torch.Tensor, weight: torch.Tensor, config: FlexiSAGAConfig) -> torch.Tensor:
    """``x`` (G, M, K) times ``weight`` (G, K, N), float32, each group as :func:`sparse_gemm` computes it
    (acc from +0, k = 0..K-1, skipping unstored weights), all groups in one k-loop: bit for bit the
    G separate ``sparse_gemm`` calls (a group's unstored step adds exactly nothing for finite X, and is
    masked where X is not finite)."""
    if config.accumulation == "fast":
        return torch.matmul(x, weight)
    compiled = pe_gemm(x, weight, config.fused_mac)
    if compiled is not None:
        return compiled
    stored = stored_elements(weight)  # (G, K, N)
    steps = stored.any(-1).any(0).nonzero().flatten().tolist()
    masked = (~stored.all(-1).all(0) & ~torch.isfinite(x).all(1).all(0)).tolist()
    acc = torch.zeros(x.shape[0], x.shape[1], weight.shape[2], dtype=torch.float32, device=x.device)
    for k in steps:
        xk, wk = x[:, :, k, None], weight[:, None, k, :]
        new = fma_f32(xk, wk, acc) if config.fused_mac else acc + xk * wk
        acc = torch.where(stored[:, None, k, :], new, acc) if masked[k] else new
    return acc


class SparseLinear(nn.Module):
    """An ``nn.Linear`` pruned once with a fixed tile-aligned mask, computed like FlexiSAGA's PEs.

    ``weight`` (N, K) and ``bias`` are parameters as in ``nn.Linear`` (in the model's dtype); ``mask``
    (N, K, bool, True = kept) is a buffer. The forward uses ``where(mask, weight, 0)``, so masked weights
    never act and their gradients are zero by construction: fine-tuning keeps them zero under any
    optimizer (momentum, Adam and weight decay all leave a zero weight with zero gradient at zero).
    ``accumulation="sequential"`` runs :func:`sparse_gemm` (bit-exact PE order, spec §2.2) in FP32;
    ``"fast"`` runs ``F.linear`` in FP32, equal up to the summation order. The bias is added once after
    the sum (assumption: the spec's GEMM has no bias). ``int32`` PEs need an integer-quantised model.
    """

    emulates_itself = True
    """Its internal products are part of the emulation: ``emulate()`` leaves them alone."""
    emulated_kind = "linear"
    """What one call counts as in ``model.emulation.counts``."""
    replaces = "Linear"
    """The layer kind it stands in for (``model.emulation.swapped``)."""

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
        if not weight.is_floating_point():
            raise TypeError(f"weight must be a floating-point tensor, got {weight.dtype}")
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
        cls,
        linear: nn.Linear,
        config: FlexiSAGAConfig = FLEXISAGA_16X16,
        *,
        cycles: CyclesFn | None = None,
        activation: torch.Tensor | None = None,
    ) -> tuple[SparseLinear, LayerSparsity]:
        """Prune ``linear`` with ``config`` (its weight taken as W = weight.T, spec orientation);
        ``activation``: its input features' norms, for ``criterion="activation"``."""
        mask, report = _prune(gemm_view(linear), config, cycles, activation)
        module = cls(linear.weight, mask.T, linear.bias, config)
        return module, report

    @property
    def sparsity(self) -> float:
        """Measured fraction of masked weight elements."""
        return (~self.mask).sum().item() / self.mask.numel()

    def _masked(self) -> torch.Tensor:
        return torch.where(self.mask, self.weight, torch.zeros((), dtype=self.weight.dtype, device=self.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_reference_arithmetic():  # the model's own product (the weight holds the mask's zeros)
            return F.linear(x, self.weight, self.bias)
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
        bias = None if self.bias is None else self.bias.float()
        if self.config.accumulation == "fast":
            return F.linear(x.float(), self._masked().float(), bias).to(x.dtype)
        x2 = x.float().reshape(-1, self.in_features)
        y = None
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            y = self._compiled_forward(x2)
        if y is None:
            y = _SequentialLinear.apply(x2, self._masked().float(), self.config)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return (y if bias is None else y + bias).to(x.dtype)

    def _compiled_forward(self, x2: torch.Tensor) -> torch.Tensor | None:
        """The PE-order product by the compiled kernel, with the masked float32 weight (K, N) and its plan
        kept while the weight and the mask are unchanged; None where the kernel does not run."""
        if x2.device.type != "cpu" or self.weight.device.type != "cpu" or not available():
            return None

        def make():
            weight = self._masked().float().T.contiguous()[None]
            return weight, pe_plan(weight)

        kept = derived(self.weight, "pe weight", (id(self.mask), self.mask._version), make, first_sight=True)
        if kept is None:  # an inference-mode weight: nothing to key on
            return None
        weight, plan = kept
        return pe_gemm(x2[None], weight, self.config.fused_mac, plan)[0]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sparsity={self.sparsity:.4f}, "
            f"vector={self.config.vector!r}, tile={self.config.tile}"
        )


class SparseConv(nn.Module):
    """An ``nn.Conv1d``/``nn.Conv2d`` pruned once in the tile-aligned vectors of its GEMM view and computed
    as its im2col product on the PEs (spec §5: M = H_out·W_out·batch, K = R·S·C_in, N = C_out).

    The pruning view is the (K, C_out) matrix ``weight.reshape(C_out, K).T`` (K = C_in/G·R·S; for
    G = 1 exactly the GEMM's weight, for grouped convolutions the groups' weights side by side, as the
    cost trace sees them); depthwise convolutions are not pruned (see :data:`DENSE_BY_DEFAULT`). ``weight``,
    ``bias`` and ``mask`` (the weight's shape) behave as :class:`SparseLinear`'s."""

    emulates_itself = True
    """Its internal products are part of the emulation: ``emulate()`` leaves them alone."""
    emulated_kind = "conv"
    """What one call counts as in ``model.emulation.counts``."""
    replaces = "Conv"
    """The layer kind it stands in for (``model.emulation.swapped``)."""

    def __init__(self, conv: nn.Module, mask: torch.Tensor, config: FlexiSAGAConfig = FLEXISAGA_16X16):
        super().__init__()
        if mask.dtype != torch.bool or mask.shape != conv.weight.shape:
            raise ValueError(f"mask must be bool with the weight's shape {tuple(conv.weight.shape)}")
        self.config = config
        self.geometry = copy_conv_attributes(self, conv)
        w = conv.weight.detach()
        self.weight = nn.Parameter(torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device)))
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        self.register_buffer("mask", mask.clone())

    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        config: FlexiSAGAConfig = FLEXISAGA_16X16,
        *,
        cycles: CyclesFn | None = None,
        activation: torch.Tensor | None = None,
    ) -> tuple[SparseConv, LayerSparsity | None]:
        """Prune ``conv`` with ``config`` (None as the report of a depthwise convolution, kept dense);
        ``activation``: the norms of its im2col columns' K features, for ``criterion="activation"``."""
        if is_depthwise(conv):
            return cls(conv, torch.ones_like(conv.weight, dtype=torch.bool), config), None
        mask, report = _prune(gemm_view(conv), config, cycles, activation)
        return cls(conv, mask.T.reshape(conv.weight.shape), config), report

    @property
    def sparsity(self) -> float:
        """Measured fraction of masked weight elements."""
        return (~self.mask).sum().item() / self.mask.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = module_input(self, x)
        g = self.geometry
        if in_reference_arithmetic():
            conv = F.conv1d if g.dims == 1 else F.conv2d
            return conv(x, self.weight, self.bias, g.stride, g.padding, g.dilation, g.groups)
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
        weight = torch.where(self.mask, self.weight, torch.zeros((), dtype=self.weight.dtype, device=x.device))
        y = conv_as_gemm(
            x.float(), weight.float(), None, g, lambda cols, w, _b: _SequentialGroups.apply(cols, w, self.config)
        )
        if self.bias is not None:
            y = y + self.bias.float().view(-1, *([1] * g.dims))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={tuple(self.weight.shape[2:])}, stride={g.stride}, "
            f"padding={g.padding}, groups={g.groups}, sparsity={self.sparsity:.4f}, vector={self.config.vector!r}"
        )


def gemm_view(layer: nn.Module) -> torch.Tensor:
    """The ``(K, N)`` weight a layer's GEMM multiplies, as pruned: a Linear's ``weight.T`` (spec orientation),
    a convolution's ``(C_in/G·kh·kw, C_out)`` im2col view."""
    return layer.weight.detach().reshape(layer.weight.shape[0], -1).T


def _prune(view: torch.Tensor, config: FlexiSAGAConfig, cycles, activation=None) -> tuple[torch.Tensor, LayerSparsity]:
    """The mask of a (K, N) weight view pruned with ``config`` (scored in FP32), and its report."""
    result = prune_layer(
        view.float(),
        config.sparsity,
        tile=config.tile,
        vector=config.vector,
        criterion=config.criterion,
        cycles=cycles,
        auto_tokens=config.auto_tokens,
        activation=activation,
    )
    element = (~result.mask).sum().item() / result.mask.numel()
    report = LayerSparsity(
        tuple(result.mask.shape), result.vector, result.vectors_pruned, result.vectors_total, element
    )
    return result.mask, report


def flexisaga_model(model: nn.Module, **options) -> tuple[nn.Module, dict[str, LayerSparsity]]:
    """A deep copy of ``model`` with its Linears and convolutions pruned (see :func:`sparsify_`; same
    options). Returns ``(new_model, {qualified name: LayerSparsity})``. The input model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    new = copy.deepcopy(model)
    return new, sparsify_(new, **options)


PRUNED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""The layer types FlexiSAGA prunes (exact types: FC and CONV operators, spec §2.3)."""


class FeatureNorms:
    """Observer of a layer's input: the L2 norm ||X_k|| of each GEMM input feature k over every row seen
    (a Linear's tokens, padding excluded when ``keep`` marks it; a convolution's im2col rows, its groups'
    stacked), in float64."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.squares = None

    def observe(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        squares = gemm_rows(self.layer, x, keep).square().sum(0)
        self.squares = squares if self.squares is None else self.squares + squares

    def norms(self) -> torch.Tensor:
        if self.squares is None:
            raise ValueError("calibrate_with ran no batch through this layer: no activation statistics")
        return self.squares.sqrt()


def input_norms(model: nn.Module, layers: dict[str, nn.Module], batches) -> dict[str, torch.Tensor]:
    """``{name: ||X_k||}`` of the named layers' inputs while ``model`` runs ``batches`` (each a tensor,
    tuple of arguments or dict of keyword arguments; padding tokens excluded through ``attention_mask``),
    in eval mode without gradients, in one pass."""
    observers = {name: FeatureNorms(layer) for name, layer in layers.items()}
    state: dict = {}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args, obs=observers[name]: obs.observe(args[0], state.get("keep")))
        for name, layer in layers.items()
    ]
    try:
        run_batches(model, batches, before=lambda batch: state.__setitem__("keep", padding_mask(batch)))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: obs.norms() for name, obs in observers.items()}


def sparsify_(
    model: nn.Module,
    *,
    sparsity: float = FLEXISAGA_16X16.sparsity,
    tile=FLEXISAGA_16X16.tile,
    vector: str = FLEXISAGA_16X16.vector,
    criterion: str = FLEXISAGA_16X16.criterion,
    accumulation: str = FLEXISAGA_16X16.accumulation,
    fused_mac: bool = FLEXISAGA_16X16.fused_mac,
    heads: Iterable[str] | Callable[[str, nn.Module], bool] = DENSE_BY_DEFAULT,
    cycles: CyclesFn | None = None,
    auto_tokens: int = FLEXISAGA_16X16.auto_tokens,
    config: FlexiSAGAConfig | None = None,
    calibrate_with=None,
    reconstruct: bool = False,
    damping: float = 0.01,
    layer_sparsity=None,
    allocation: str = "uniform",
) -> dict[str, LayerSparsity]:
    """Replace, in place, every ``nn.Linear`` of ``model`` by a :class:`SparseLinear` and every
    ``nn.Conv1d``/``nn.Conv2d`` by a :class:`SparseConv`.

    Only modules of exactly those types are replaced (a subclass such as the ``out_proj`` of
    ``nn.MultiheadAttention`` is read directly by its parent and stays dense).

    Layers for which ``heads`` holds stay dense and in the model's arithmetic: ``heads`` is a callable
    ``(name, module) -> bool`` or fnmatch patterns matched against the qualified name and each of its
    dot-separated parts (default :data:`DENSE_BY_DEFAULT`; ``heads=()`` prunes every layer). Depthwise
    convolutions run on the array unpruned. ``vector="auto"`` needs ``cycles`` (see
    :data:`numerics.sparsity.CyclesFn`) and compares at M = ``auto_tokens``. ``config``, a whole
    :class:`FlexiSAGAConfig`, replaces the individual array and pruning options. ``criterion="activation"``
    needs ``calibrate_with``: batches (tensors, tuples of arguments or dicts of keyword arguments) the dense
    model runs once to measure each layer's input feature norms (:class:`FeatureNorms`). ``reconstruct=True``
    (needs ``calibrate_with`` too) then refits each pruned Linear's and groups = 1 convolution's kept weights,
    in order, to the dense layer's output (:func:`numerics.reconstruct.reconstruct_`, ridge ``damping``
    relative to the mean input energy). ``layer_sparsity`` (a dict ``{pattern: sparsity}`` or a callable
    ``(name, module) -> sparsity``, :func:`layer_sparsity_rule`) sets each layer's sparsity instead of
    ``sparsity``. ``allocation="global"`` keeps ``sparsity`` over all the pruned layers' vectors together
    and shares it out by :func:`numerics.sparsity.global_allocation` (less where a layer's weight sits in
    few vectors). Returns ``{qualified name: LayerSparsity}`` of the pruned layers. Options are checked
    before anything changes.
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
    check_calibration(config.criterion, reconstruct, calibrate_with)
    per_layer = None if layer_sparsity is None else layer_sparsity_rule(layer_sparsity)
    check_allocation(allocation, layer_sparsity)
    check_damping(damping)
    dense_model = copy.deepcopy(model) if reconstruct else None
    rule = head_rule(heads)
    slots = [
        (parent, child_name, f"{name}.{child_name}" if name else child_name, child)
        for name, parent in model.named_modules(remove_duplicate=False)
        for child_name, child in parent._modules.items()  # with repeats, unlike named_children
        if type(child) in PRUNED_LAYERS
    ]
    dense = {id(child) for _, _, full, child in slots if rule(full, child)}  # under any name
    norms = {}
    if config.criterion == "activation":  # one pass of the dense model: every pruned layer's input norms
        layers = {full: child for _, _, full, child in slots if id(child) not in dense}
        first = {}
        for full, child in layers.items():  # a shared layer observed under one name
            first.setdefault(id(child), full)
        by_id = input_norms(model, {full: layers[full] for full in first.values()}, calibrate_with)
        norms = {id(layers[full]): value for full, value in by_id.items()}
    if allocation == "global":
        per_layer = _global_rule(slots, dense, config, cycles, norms)
    report: dict[str, LayerSparsity] = {}
    replaced: dict[int, nn.Module] = {}  # a layer shared by two parents is pruned once
    for parent, child_name, full, child in slots:
        if id(child) in dense:
            continue
        if id(child) not in replaced:
            make = SparseLinear.from_linear if type(child) is nn.Linear else SparseConv.from_conv
            layer_config = config if per_layer is None else dataclasses.replace(config, sparsity=per_layer(full, child))
            replaced[id(child)], layer = make(child, layer_config, cycles=cycles, activation=norms.get(id(child)))
            if layer is not None:
                report[full] = layer
        setattr(parent, child_name, replaced[id(child)])
    if reconstruct:
        refit = [name for name in report if getattr(model.get_submodule(name), "geometry", None) is None
                 or model.get_submodule(name).geometry.groups == 1]  # fmt: skip
        reconstruct_(model, dense_model, refit, calibrate_with, damping=damping)
    return report


def check_allocation(allocation, layer_sparsity=None) -> str:
    """``allocation`` if it is one of :data:`numerics.sparsity.ALLOCATIONS` and fits ``layer_sparsity``."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}; got {allocation!r}")
    if allocation == "global" and layer_sparsity is not None:
        raise ValueError("allocation='global' shares one sparsity among the layers; per-layer sparsity sets them")
    return allocation


def _global_rule(slots, dense: set, config: FlexiSAGAConfig, cycles, norms: dict) -> Callable[[str, nn.Module], float]:
    """The per-layer rule of ``allocation="global"`` over the layers of ``slots`` that are pruned (not in
    ``dense``, not depthwise), each in its orientation (``"auto"`` resolved at the uniform sparsity)."""
    layers = {}
    for _, _, _, child in slots:
        if id(child) in dense or id(child) in layers or (type(child) is not nn.Linear and is_depthwise(child)):
            continue
        view, activation = gemm_view(child).float(), norms.get(id(child))
        vector = config.vector
        if vector == "auto":
            vector = _prune(view, config, cycles, activation)[1].vector
        layers[id(child)] = (view, vector, activation)
    shares = global_allocation(layers, config.sparsity, tile=config.tile, criterion=config.criterion)
    return lambda name, module: shares[id(module)]


def layer_sparsity_rule(spec) -> Callable[[str, nn.Module], float]:
    """Per-layer sparsity as ``rule(name, module) -> float``: ``spec`` is a dict ``{pattern: sparsity}``
    (fnmatch patterns against the qualified name and each of its dot-separated parts; the first matching
    pattern wins; a layer no pattern matches stays dense) or a callable ``(name, module) -> sparsity``.
    Every value is checked to lie in [0, 1)."""
    if callable(spec):

        def rule(name: str, module: nn.Module) -> float:
            return check_sparsity(spec(name, module))

        return rule
    if not isinstance(spec, dict) or not all(isinstance(k, str) for k in spec):
        raise ValueError(f"per-layer sparsity must be a dict {{pattern: sparsity}} or a callable, got {spec!r}")
    for value in spec.values():
        check_sparsity(value)
    rules = [(head_rule((pattern,)), value) for pattern, value in spec.items()]

    def by_pattern(name: str, module: nn.Module) -> float:
        return next((float(value) for match, value in rules if match(name, module)), 0.0)

    return by_pattern


def check_calibration(criterion: str, reconstruct, calibrate_with) -> None:
    """ValueError unless ``calibrate_with`` is given exactly when it is used: by ``criterion="activation"``
    or ``reconstruct=True``."""
    if not isinstance(reconstruct, bool):
        raise ValueError(f"reconstruct must be True or False, got {reconstruct!r}")
    needed = criterion == "activation" or reconstruct
    if needed and calibrate_with is None:
        raise ValueError(
            "criterion='activation' and reconstruct=True need calibrate_with: batches (tensors, tuples or "
            "dicts of forward arguments) to measure the layers' inputs"
        )
    if not needed and calibrate_with is not None:
        raise ValueError("calibrate_with is only used by criterion='activation' or reconstruct=True")
