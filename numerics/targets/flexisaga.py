"""Target ``"flexisaga"``: structured-sparse weights on FlexiSAGA's systolic array (spec ``flexisaga.md``).

Every ``nn.Linear`` of the transformer blocks is pruned once, at ``emulate`` time, in whole
tile-aligned weight vectors (:func:`numerics.sparse_linear.sparsify_`); heads and the pooler stay
dense by default (``skip``). The masks stay fixed: fine-tuning the emulated model keeps pruned
weights at zero. Products run as the PEs compute them (``accumulation="sequential"``, FP32 in k
order) or through ``torch.matmul`` (``"fast"``). Attention products have no static weight and run
dense. ``model.emulation.details["sparsity"]`` holds the per-layer :class:`LayerSparsity`.
"""

from __future__ import annotations

from torch import nn

from numerics.nn import linears_from_conv1d, register_target
from numerics.sparse_linear import DENSE_BY_DEFAULT, sparsify_
from numerics.sparsity import FLEXISAGA_16X16

OPTIONS = {
    "sparsity": FLEXISAGA_16X16.sparsity,
    "tile": FLEXISAGA_16X16.tile,
    "vector": FLEXISAGA_16X16.vector,
    "criterion": FLEXISAGA_16X16.criterion,
    "accumulation": FLEXISAGA_16X16.accumulation,
    "fused_mac": FLEXISAGA_16X16.fused_mac,
    "skip": DENSE_BY_DEFAULT,
    "cycles": None,
    "auto_tokens": FLEXISAGA_16X16.auto_tokens,
}


@register_target("flexisaga", summary="FlexiSAGA structured-sparse weights on a systolic array (arXiv 2506.01566)",
                 options=OPTIONS)
def prepare(model: nn.Module, options: dict):
    model.emulation.swapped.update(linears_from_conv1d(model))  # GPT-2's projections
    report = sparsify_(model, **options)
    model.emulation.details["sparsity"] = report
    model.emulation.swapped["Linear -> SparseLinear"] += len(report)
    return {}
