"""Every target on the architectures users bring (tests.architectures): the layers the hardware runs are
all emulated, nothing escapes unnamed, the output stays close to FP32, the original is untouched,
backward runs and the cost model prices the emulated model."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from hwmodels import estimate
from numerics.nn import emulate
from tests.architectures import ARCHITECTURES

pytest.importorskip("transformers")

TARGETS = ("softex", "hastily", "atleus", "flexisaga")
OPTIONS = {"flexisaga": {"sparsity": 0.0}}
"""FlexiSAGA unpruned: every layer still runs through the array in PE order, so the output must stay at
FP32's; pruning's accuracy is tested on its own."""
FLOOR = {
    "mobilenet_v2": {"softex": 0.95, "hastily": 0.8, "atleus": 0.7},
    "resnet18": {"hastily": 0.97, "atleus": 0.97},
}
"""Lowest mean cosine vs FP32 on random weights (BF16, INT8 and M8F8 through 20-52 convolutions and their
BatchNorms; measured 0.970, 0.861, 0.783 on MobileNetV2); 0.99 elsewhere."""
CNNS = ("resnet18", "mobilenet_v2")
UNEMULATED = {("llama", "softex"): {"silu": 2}}
"""What a target's emulation leaves in the model's arithmetic (SoftEx has no SiLU datapath)."""


def _cosine(a, b):
    return F.cosine_similarity(a.double().flatten(1), b.double().flatten(1), dim=-1).mean().item()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_layer_the_hardware_runs_is_emulated(name, target):
    arch = ARCHITECTURES[name]
    model = arch.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = arch.inputs()
    with torch.no_grad():
        reference = arch.readout(model(**inputs))
    em = emulate(model, target, **OPTIONS.get(target, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            out = arch.readout(em(**inputs))
    counts = em.emulation.counts
    if target == "softex":
        convs = sum(type(m).__name__.startswith("Conv") and hasattr(m, "kernel_size") for m in model.modules())
        assert counts["conv"] == convs
        assert counts["matmul"] >= arch.hardware_products - convs  # every Linear, plus attention products
    else:
        # every static-weight layer but the heads on the crossbars / the array, each call counted once
        assert counts["linear"] + counts["conv"] >= arch.hardware_products
        swapped = sum(v for k, v in em.emulation.swapped.items() if "-> Crossbar" in k or "-> Sparse" in k)
        assert swapped == arch.hardware_products
    if name not in CNNS and target != "flexisaga":  # FlexiSAGA runs attention dense, as the model does
        assert counts["attention"] > 0
    assert dict(em.emulation.unemulated) == UNEMULATED.get((name, target), {})
    assert _cosine(out, reference) > FLOOR.get(name, {}).get(target, 0.99)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    out = arch.readout(em(**inputs))
    out.float().square().mean().backward()
    assert any(p.grad is not None for p in em.parameters())
    report = estimate(em, forward_kwargs=inputs)
    assert report.total_cycles > 0 and report.energy_j > 0
