"""The kernels and every target on a CUDA device: exact kernels give the CPU's bits, emulated models run
on the input's device. Skipped without CUDA."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics import softex
from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM, crossbar_matmul
from numerics.expp import expp
from numerics.formats import bits_to_bf16
from numerics.nn import emulate
from numerics.sparsity import FLEXISAGA_16X16, prune, sparse_gemm
from numerics.uclm import softmax as uclm_softmax
from tests.models import TinyTransformer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = "cuda"
TARGETS = ("softex", "hastily", "atleus", "flexisaga")


def _same_bits(cpu: torch.Tensor, gpu: torch.Tensor) -> bool:
    return gpu.device.type == CUDA and torch.equal(cpu, gpu.cpu())


def test_expp_on_every_bf16_code():
    codes = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    x = bits_to_bf16(codes)
    assert _same_bits(expp(x), expp(x.to(CUDA)))


def test_softex_softmax_and_gelu():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 300, generator=g) * 8).bfloat16()
    for accumulators in (1, 4):
        assert _same_bits(
            softex.softmax(x, accumulators=accumulators), softex.softmax(x.to(CUDA), accumulators=accumulators)
        )
    assert _same_bits(softex.gelu(x), softex.gelu(x.to(CUDA)))


def test_crossbars_and_uclm():
    g = torch.Generator().manual_seed(1)
    for config in (ATLEUS_RERAM, HASTILY_SRAM):
        lo, hi = config.input_range
        x = torch.randint(lo, hi + 1, (16, 300), generator=g)
        wl, wh = config.weight_range
        w = torch.randint(wl, wh + 1, (300, 40), generator=g)
        assert _same_bits(crossbar_matmul(x, w, config), crossbar_matmul(x.to(CUDA), w.to(CUDA), config))
    logits = torch.randn(8, 100, generator=g, dtype=torch.float64) * 4
    assert _same_bits(uclm_softmax(logits), uclm_softmax(logits.to(CUDA)))


def test_sparse_gemm_in_pe_order():
    g = torch.Generator().manual_seed(2)
    w, _ = prune(torch.randn(96, 48, generator=g), 0.5)
    x = torch.randn(32, 96, generator=g)
    assert _same_bits(sparse_gemm(x, w, FLEXISAGA_16X16), sparse_gemm(x.to(CUDA), w.to(CUDA), FLEXISAGA_16X16))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(F.relu(self.depthwise(F.relu(self.conv(x)))).flatten(1))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "make, inputs",
    [
        (TinyTransformer, lambda: torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(3))),
        (ConvNet, lambda: torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))),
    ],
    ids=["transformer", "convnet"],
)
def test_every_target_runs_on_the_device(target, make, inputs):
    torch.manual_seed(0)
    model = make().eval()
    options = {"noise": 0.02, "seed": 1} if target == "atleus" else {}
    on_cpu = emulate(model, target, **options)
    on_gpu = emulate(model, target, **options).to(CUDA)
    x = inputs()
    with torch.no_grad():
        expected, got = on_cpu(x), on_gpu(x.to(CUDA))
    assert got.device.type == CUDA and torch.isfinite(got).all()
    assert on_gpu.emulation.counts == on_cpu.emulation.counts
    # integer crossbars, lookups and the PE order are exact; only float BLAS sums (the host's order) may
    # move a BF16 rounding, and the Atleus noise is drawn on the CPU generator either way
    torch.testing.assert_close(got.cpu(), expected, rtol=2e-2, atol=2e-2)
