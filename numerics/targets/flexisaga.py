"""Target ``"flexisaga"``: structured-sparse weights on FlexiSAGA's systolic array (spec flexisaga.md).

Every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (FC and CONV operators; convolutions through their
im2col GEMM view) is pruned once, at ``emulate`` time, in whole tile-aligned weight vectors
(:func:`numerics.sparse_linear.sparsify_`); the heads (:mod:`numerics.heads`) stay dense and in the
model's arithmetic, depthwise convolutions run unpruned. The masks stay fixed: fine-tuning the
emulated model keeps pruned weights at zero. Products run as the PEs compute them
(``accumulation="sequential"``, FP32 in k order) or through ``torch.matmul`` (``"fast"``), in FP32
whatever the model's dtype. Attention products have no static weight and run dense.
``model.emulation.details["sparsity"]`` holds the per-layer :class:`LayerSparsity`.

``vector="auto"`` keeps, per layer, the orientation with fewer cycles; the cycle count comes from the
target's cost model (``hwmodels.flexisaga.auto_cycles``) unless ``cycles`` is given.
"""

from __future__ import annotations

import dataclasses
import numbers

from torch import nn

from numerics.handlers import keep_on_host, standard_swaps, static_product_handlers, swap_record, uncovered_handlers
from numerics.heads import check_heads
from numerics.reconstruct import check_damping
from numerics.registry import TargetOptions, get_target, register_target
from numerics.sparse_linear import (
    DENSE_BY_DEFAULT,
    check_allocation,
    check_calibration,
    layer_sparsity_rule,
    sparsify_,
)
from numerics.sparsity import FLEXISAGA_16X16, FlexiSAGAConfig, check_tile


@dataclasses.dataclass(frozen=True)
class FlexiSAGAOptions(TargetOptions):
    """Options of the ``"flexisaga"`` target; :attr:`array` is the one :class:`FlexiSAGAConfig` they
    describe (its checks are the checks of these options)."""

    RENAMED = {"skip": "heads"}

    COST = (
        "sparsity",
        "tile",
        "vector",
        "criterion",
        "heads",
        "cycles",
        "auto_tokens",
        "calibrate_with",
        "allocation",
    )
    ACCURACY_ONLY = {
        "accumulation": "the PE order is the hardware's; 'fast' only computes it with torch.matmul",
        "fused_mac": "one rounding or two per MAC: the same MAC per cycle",
        "reconstruct": "refits the kept weights' values; the masks, and so the skipped vectors, are unchanged",
        "damping": "the ridge of the refit: weight values only",
    }

    sparsity: object = FLEXISAGA_16X16.sparsity
    """Fraction of each layer's pruning vectors zeroed, in [0, 1); or per layer, a dict ``{pattern:
    sparsity}`` (first matching pattern wins, unmatched layers stay dense) or a callable ``(name, module)
    -> sparsity`` (:func:`numerics.sparse_linear.layer_sparsity_rule`). Moves cost: the sparse dataflows
    skip the pruned vectors."""
    tile: tuple = FLEXISAGA_16X16.tile
    """(rows, cols) of the PE array; pruning vectors are aligned to it. Moves cost: array size."""
    vector: str = FLEXISAGA_16X16.vector
    """Pruning vector: ``"row"``, ``"col"``, ``"channel"`` or ``"auto"``. Moves cost: which sparse
    dataflow can skip."""
    criterion: str = FLEXISAGA_16X16.criterion
    """Vector score: ``"l2"`` or ``"l1"`` (the weights' norm), or ``"activation"`` (weights scaled by their
    input features' norms over ``calibrate_with``; :func:`numerics.sparsity.vector_scores`). Moves cost
    through the masks: which vectors go, which the sparse dataflows see where it changes how they fall
    across tiles (sWS folds, edge tiles)."""
    accumulation: str = FLEXISAGA_16X16.accumulation
    """``"sequential"`` (bit-exact PE order) or ``"fast"`` (``torch.matmul``)."""
    fused_mac: bool = FLEXISAGA_16X16.fused_mac
    """One rounding per MAC (True) or a rounded product then a rounded sum."""
    heads: object = DENSE_BY_DEFAULT
    """Layers left dense, in the model's arithmetic: name patterns or a callable ``(name, module) -> bool``
    (default :data:`numerics.heads.HEADS`). Moves cost: those products run dense."""
    cycles: object = None
    """``cycles(pruned_weight_kn, m, rows, cols) -> int`` for ``vector="auto"``; None: the cost model's."""
    auto_tokens: int = FLEXISAGA_16X16.auto_tokens
    """M at which ``vector="auto"`` compares cycle counts. Moves cost: the orientation chosen."""
    calibrate_with: object = None
    """Batches (each a tensor, tuple or dict of forward arguments) the model runs to measure each layer's
    inputs; required by, and only used by, ``criterion="activation"`` (input feature norms) and
    ``reconstruct=True``. Moves cost through the masks, as ``criterion``."""
    reconstruct: bool = False
    """Refit each pruned layer's kept weights, in order, to the dense layer's output on ``calibrate_with``
    (damped least squares per output column on its kept inputs: :mod:`numerics.reconstruct`)."""
    damping: float = 0.01
    """The refit's ridge, relative to the mean input energy mean(diag(XᵀX))."""
    allocation: str = "uniform"
    """How a number ``sparsity`` is shared among the layers: ``"uniform"``, each layer at ``sparsity``;
    ``"global"``, ``sparsity`` of all the pruned layers' vectors together, fewer pruned where a layer's
    weight (times its inputs' norms, with ``criterion="activation"``) sits in few vectors
    (:func:`numerics.sparsity.global_allocation`). Moves cost through the masks."""

    def __post_init__(self):
        self.array  # noqa: B018  (check_tile and FlexiSAGAConfig check tile, sparsity, vector, criterion, ...)
        check_heads(self.heads)
        if not self.uniform:
            layer_sparsity_rule(self.sparsity)  # checks a dict's patterns and values
        check_calibration(self.criterion, self.reconstruct, self.calibrate_with)
        check_damping(self.damping)
        check_allocation(self.allocation, None if self.uniform else self.sparsity)
        if self.cycles is not None and not callable(self.cycles):
            raise ValueError(f"cycles must be None or a callable (weight, m, rows, cols) -> int; got {self.cycles!r}")

    @property
    def array(self) -> FlexiSAGAConfig:
        """The array these options describe (data type, word size and clock from FLEXISAGA_16X16)."""
        rows, cols = check_tile(self.tile)
        return dataclasses.replace(
            FLEXISAGA_16X16,
            rows=rows,
            cols=cols,
            sparsity=self.sparsity if self.uniform else 0.0,  # per-layer values: the pruner's
            vector=self.vector,
            criterion=self.criterion,
            accumulation=self.accumulation,
            fused_mac=self.fused_mac,
            auto_tokens=self.auto_tokens,
        )

    @property
    def uniform(self) -> bool:
        """True when ``sparsity`` is one number (each layer's, or with ``allocation="global"`` the whole's)."""
        return isinstance(self.sparsity, numbers.Real) and not isinstance(self.sparsity, bool)

    @property
    def same_in_every_layer(self) -> bool:
        """True when every layer is pruned at one sparsity (a bare workload can be priced)."""
        return self.uniform and self.allocation == "uniform"

    def cycles_function(self):
        """The cycle count ``vector="auto"`` compares: ``cycles`` or the cost model's."""
        return self.cycles if self.cycles is not None else get_target("flexisaga").cost_function("auto_cycles")


@register_target(
    "flexisaga",
    summary="FlexiSAGA structured-sparse weights on a systolic array (arXiv 2506.01566)",
    options=FlexiSAGAOptions,
    cost_model="hwmodels.flexisaga",
    priced_on_copy=True,
)
def prepare(model: nn.Module, options: FlexiSAGAOptions):
    model.emulation.swapped.update(standard_swaps(model))
    report = sparsify_(
        model,
        config=options.array,
        heads=options.heads,
        layer_sparsity=None if options.uniform else options.sparsity,
        calibrate_with=options.calibrate_with,
        reconstruct=options.reconstruct,
        damping=options.damping,
        allocation=options.allocation,
        cycles=options.cycles_function() if options.vector == "auto" else None,
    )
    model.emulation.details["sparsity"] = report
    model.emulation.swapped.update(swap_record(model))
    keep_on_host(model, options.heads)
    return {**uncovered_handlers(), **static_product_handlers()}
