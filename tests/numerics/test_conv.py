"""Convolutions as im2col GEMMs (numerics/conv.py) on every target that runs them.

Each emulated convolution must equal, bit for bit, the target's own product primitive applied to the
im2col form of its input. The im2col matrices here are built by the test itself (explicit ``F.pad`` and
strided slicing per kernel tap), independently of :mod:`numerics.conv`, and checked against the exact
float64 convolution first so that the reference cannot silently share a mistake with the library.
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from numerics.cim_layers import CrossbarConv, CrossbarLinear
from numerics.conv import ConvGeometry, conv_as_gemm
from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM
from numerics.nn import emulate
from numerics.quant import M8F4, M8F8, QuantConfig
from numerics.redmule import bf16_matmul
from numerics.sparse_linear import SparseConv
from numerics.sparsity import FlexiSAGAConfig, sparse_gemm

# torch's own note whenever a native convolution with an even kernel pads 'same' (the cases include them)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

# ------------------------------------------------------------------ the test's own im2col


def explicit_pads(padding, kernel, dilation):
    """(before, after) per spatial dimension, as torch defines them: "same" pads d·(k-1) in total, the odd
    element after."""
    if padding == "valid":
        return [(0, 0) for _ in kernel]
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in padding]


def padded_input(conv, x):
    """``x`` (batched) padded as the convolution sees it: zeros, or the module's own padding mode."""
    pads = explicit_pads(conv.padding, conv.kernel_size, conv.dilation)
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad: last dimension first
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, flat, mode=mode)


def reference_cols(conv, x):
    """(cols (G, M, K), output spatial size) of ``conv`` on batched ``x``, by strided slicing: row
    m = (batch, output row, output column), column k = (input channel of the group, kernel row, kernel column)."""
    xp = padded_input(conv, x)
    dims = len(conv.kernel_size)
    if dims == 1:  # Conv1d is the 2-D case with a kernel height of 1
        xp = xp.unsqueeze(2)
        kernel, stride, dilation = (1, *conv.kernel_size), (1, *conv.stride), (1, *conv.dilation)
    else:
        kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
    b, c, h, w = xp.shape
    ho = (h - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (w - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    taps = [
        xp[
            :,
            :,
            i * dilation[0] : i * dilation[0] + stride[0] * (ho - 1) + 1 : stride[0],
            j * dilation[1] : j * dilation[1] + stride[1] * (wo - 1) + 1 : stride[1],
        ]
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]  # each (B, C, Ho, Wo)
    t = torch.stack(taps, 2)  # (B, C, kh·kw, Ho, Wo)
    g = conv.groups
    t = t.reshape(b, g, c // g * kernel[0] * kernel[1], ho * wo)
    cols = t.permute(1, 0, 3, 2).reshape(g, b * ho * wo, -1)
    return cols, ((wo,) if dims == 1 else (ho, wo))


def reference_weights(conv, weight=None):
    """W_g (K × N) for each group g: ``weight[g·N:(g+1)·N].reshape(N, K).T``."""
    weight = conv.weight.detach() if weight is None else weight
    n = weight.shape[0] // conv.groups
    return [weight[g * n : (g + 1) * n].reshape(n, -1).T for g in range(conv.groups)]


def assemble(ys, batch, spatial):
    """The convolution's output (B, C_out, *spatial) from the G products (M, N_g)."""
    y = torch.stack(ys)  # (G, B·P, N_g)
    g, _, n = y.shape
    return y.view(g, batch, math.prod(spatial), n).permute(1, 0, 3, 2).reshape(batch, g * n, *spatial)


def add_bias(y, bias, dims):
    return y if bias is None else y + bias.detach().to(y.dtype).view(-1, *([1] * dims))


# ------------------------------------------------------------------ cases

CASES = {
    "2d-plain": lambda: nn.Conv2d(4, 6, 3),
    "2d-stride2-pad1-nobias": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
    "2d-tuples-dilation": lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    "2d-same-dilated": lambda: nn.Conv2d(4, 6, 3, padding="same", dilation=2),
    "2d-same-even-kernel": lambda: nn.Conv2d(4, 6, (2, 4), padding="same"),
    "2d-valid-stride2": lambda: nn.Conv2d(4, 6, 3, stride=2, padding="valid"),
    "2d-groups2": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "2d-depthwise-mult2": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4),
    "2d-depthwise-nobias": lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
    "2d-reflect": lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
    "2d-circular-stride2": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), padding_mode="circular"),
    "1d-stride2-pad1": lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1),
    "1d-same-dilated-groups2": lambda: nn.Conv1d(4, 6, 4, padding="same", dilation=2, groups=2),
    "1d-depthwise-reflect": lambda: nn.Conv1d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"),
    "1d-pointwise-nobias": lambda: nn.Conv1d(4, 6, 1, bias=False),
}


def make_case(name, seed=0):
    """(model = nn.Sequential(conv), input) for a case, seeded."""
    torch.manual_seed(seed)
    conv = CASES[name]()
    g = torch.Generator().manual_seed(seed + 1)
    shape = (2, 4, 7, 9) if isinstance(conv, nn.Conv2d) else (2, 4, 11)
    return nn.Sequential(conv).eval(), torch.randn(shape, generator=g)


@pytest.mark.parametrize("name", CASES)
def test_reference_im2col_is_the_convolution(name):
    """The test's own im2col, multiplied exactly in float64, is F.conv1d/F.conv2d (validates the goldens)."""
    model, x = make_case(name)
    conv = model[0].double()
    cols, spatial = reference_cols(conv, x.double())
    ys = [c @ w for c, w in zip(cols, reference_weights(conv))]
    got = add_bias(assemble(ys, x.shape[0], spatial), conv.bias, len(spatial))
    with torch.no_grad():
        want = conv(x.double())
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ softex


def softex_reference(conv, x, accumulate):
    cols, spatial = reference_cols(conv, x)
    n = conv.out_channels // conv.groups
    bias = None if conv.bias is None else conv.bias.detach()
    ys = [
        bf16_matmul(cols[g], w, None if bias is None else bias[g * n : (g + 1) * n], accumulate=accumulate)
        for g, w in enumerate(reference_weights(conv))
    ]
    return assemble(ys, x.shape[0], spatial)


@pytest.mark.parametrize("name", CASES)
def test_softex_conv_is_redmule_gemm_of_im2col_bf16_accumulation(name):
    # a chained BF16 FMA per output: independent of any BLAS blocking, so exact for every geometry
    model, x = make_case(name)
    em = emulate(model, "softex", matmul_accumulate="bf16")
    with torch.no_grad():
        y = em(x)
    assert em.emulation.counts["conv"] == 1
    assert torch.equal(y, softex_reference(model[0], x, "bf16"))
    with torch.no_grad():  # and it is not the exact convolution
        assert not torch.equal(y, model(x))


@pytest.mark.parametrize("name", CASES)
def test_softex_conv_is_redmule_gemm_of_im2col_fp32_accumulation(name):
    model, x = make_case(name)
    em = emulate(model, "softex")  # matmul_accumulate="fp32" by default
    with torch.no_grad():
        y = em(x)
    want = softex_reference(model[0], x, "fp32")
    if model[0].groups == 1:
        # one (M, K) x (K, N) FP32 product on both sides: the same BLAS call, so bit for bit
        assert torch.equal(y, want)
    else:
        # the library runs the G products as one batched matmul, the reference as G calls: the BLAS may
        # block the FP32 sum differently, which can move the one final BF16 rounding by at most 1 ulp
        ulp = torch.where(want == 0, torch.zeros_like(want), 2.0 ** (torch.frexp(want).exponent - 8).float())
        assert bool(((y - want).abs() <= ulp).all())


def test_softex_unbatched_input_functional_path():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)).eval()
    x = torch.randn(4, 7, 9, generator=torch.Generator().manual_seed(4))
    em = emulate(model, "softex", matmul_accumulate="bf16")
    with torch.no_grad():
        y = em(x)
    assert y.shape == (6, 4, 5)
    assert em.emulation.counts["conv"] == 1
    assert torch.equal(y, softex_reference(model[0], x.unsqueeze(0), "bf16").squeeze(0))


class FunctionalConvs(nn.Module):
    """Functional convolutions with keyword arguments and the torch.* aliases."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w2 = nn.Parameter(torch.randn(6, 2, 3, 3, generator=g))
        self.w1 = nn.Parameter(torch.randn(6, 4, 2, generator=g))
        self.b1 = nn.Parameter(torch.randn(6, generator=g))

    def forward(self, x2, x1):
        y2 = F.conv2d(x2, self.w2, None, padding="same", dilation=2, groups=2)
        y1 = torch.conv1d(x1, weight=self.w1, bias=self.b1, stride=2, padding=1)
        return y2, y1


def test_softex_functional_keyword_calls():
    model = FunctionalConvs()
    g = torch.Generator().manual_seed(6)
    x2, x1 = torch.randn(4, 7, 9, generator=g), torch.randn(2, 4, 11, generator=g)  # x2 unbatched
    em = emulate(model, "softex", matmul_accumulate="bf16")
    with torch.no_grad():
        y2, y1 = em(x2, x1)
    assert em.emulation.counts["conv"] == 2
    conv2 = nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, bias=False)
    conv1 = nn.Conv1d(4, 6, 2, stride=2, padding=1)
    with torch.no_grad():
        conv2.weight.copy_(model.w2)
        conv1.weight.copy_(model.w1)
        conv1.bias.copy_(model.b1)
    assert torch.equal(y2, softex_reference(conv2, x2.unsqueeze(0), "bf16").squeeze(0))
    assert torch.equal(y1, softex_reference(conv1, x1, "bf16"))


@pytest.mark.parametrize("name", ["2d-groups2", "2d-reflect", "1d-same-dilated-groups2"])
def test_softex_gradients_are_the_exact_convolutions(name):
    model, x = make_case(name)
    em = emulate(model, "softex")
    grad_out = None
    grads = []
    for net in (em, model):
        xi = x.clone().requires_grad_(True)
        y = net(xi)
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
        (y * grad_out).sum().backward()
        grads.append((xi.grad, net[0].weight.grad, None if net[0].bias is None else net[0].bias.grad))
    (gx_em, gw_em, gb_em), (gx, gw, gb) = grads
    assert torch.equal(gx_em, gx)
    assert torch.equal(gw_em, gw)
    assert (gb_em is None and gb is None) or torch.equal(gb_em, gb)


# ------------------------------------------------------------------ hastily / atleus

CIM_VARIANTS = {
    # target options, the QuantConfig and crossbar the target documents for its Linears
    "hastily": ({}, QuantConfig(8, 8, granularity="channel", input_granularity="token"), HASTILY_SRAM),
    "atleus": ({}, M8F8, ATLEUS_RERAM),
    # 4-bit FFN weights: a convolution outside attention is an FFN-kind layer, so its weights get 4 bits
    "atleus-M8F4": ({"quant": "M8F4"}, M8F4, ATLEUS_RERAM),
}


def crossbar_reference(conv, x, quant, crossbar, emulated, input_scale=None):
    """Per group, a CrossbarLinear built from nn.Linear(weight = W_g^T) applied to X_g, then + bias."""
    cols, spatial = reference_cols(conv, x)
    ys = []
    for g, w in enumerate(reference_weights(conv)):
        linear = nn.Linear(w.shape[0], w.shape[1], bias=False)
        with torch.no_grad():
            linear.weight.copy_(w.T)
        reference = CrossbarLinear(linear, quant.ffn_weight_bits, crossbar, quant)
        reference.input_scale = input_scale
        assert reference.crossbar == emulated.gemms[g].crossbar
        assert reference.wq.bits == emulated.gemms[g].wq.bits == quant.ffn_weight_bits
        assert torch.equal(reference.wq.codes, emulated.gemms[g].wq.codes)
        with torch.no_grad():
            ys.append(reference(cols[g]))
    return add_bias(assemble(ys, x.shape[0], spatial), conv.bias, len(spatial))


@pytest.mark.parametrize("variant", CIM_VARIANTS)
@pytest.mark.parametrize("name", CASES)
def test_crossbar_conv_is_crossbar_linear_of_im2col(variant, name):
    options, quant, crossbar = CIM_VARIANTS[variant]
    model, x = make_case(name)
    em = emulate(model, variant.split("-")[0], **options)
    layer = em[0]
    assert isinstance(layer, CrossbarConv) and len(layer.gemms) == model[0].groups
    with torch.no_grad():
        y = em(x)
    assert torch.equal(y, crossbar_reference(model[0], x, quant, crossbar, layer))
    assert em.emulation.counts["conv"] == 1 and em.emulation.counts["linear"] == 0


def wide_groups():
    return nn.Conv2d(36, 6, 3, padding=1, groups=2)  # K = 162: three 64-row blocks per group, two of 128 rows


def depthwise_3x3():
    return nn.Conv2d(36, 72, 3, padding=1, groups=36)


@pytest.mark.parametrize(
    ("target", "fields", "conv", "clips"),
    [
        ("hastily", {"adc_bits": 4}, wide_groups, True),
        ("atleus", {"adc_bits": 6}, wide_groups, True),
        ("hastily", {"adc_bits": 7}, wide_groups, False),  # 64 rows always fit: each block's exact product
        ("atleus", {"adc_bits": 12}, wide_groups, False),  # likewise, and a scale per 128-row block
        ("hastily", {"adc_bits": 3}, depthwise_3x3, True),  # K = 9 > 7
        ("hastily", {"adc_bits": 2}, lambda: nn.Conv2d(36, 36, 2, groups=36), True),  # K = 4 = the top code + 1
        # K = 9 rows fit a 6-bit ADC, but a truncating ADC's step is set by the whole 64-row array
        ("hastily", {"adc_mode": "truncate"}, depthwise_3x3, True),
    ],
)
def test_grouped_crossbar_conv_is_its_groups_products(target, fields, conv, clips):
    _, quant, crossbar = CIM_VARIANTS[target]
    crossbar = dataclasses.replace(crossbar, **fields)
    torch.manual_seed(3)  # the weights: whether some conversions clip depends on them
    model = nn.Sequential(conv()).eval()
    x = torch.randn(2, 36, 5, 5, generator=torch.Generator().manual_seed(4))
    em = emulate(model, target, crossbar=crossbar)
    with torch.no_grad():
        y = em(x)
        ideal = emulate(model, target, crossbar=dataclasses.replace(crossbar, adc_bits=12, adc_mode="saturate"))(x)
    assert torch.equal(y, crossbar_reference(model[0], x, quant, crossbar, em[0]))
    assert torch.equal(y, ideal) != clips  # whether some conversions clip


def test_grouped_crossbar_conv_follows_a_changed_crossbar():
    # the groups' stacked weights are kept per device and crossbar: a crossbar set afterwards is used
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(36, 36, 2, groups=36)).eval()
    x = torch.randn(2, 36, 5, 5, generator=torch.Generator().manual_seed(4))
    narrow = dataclasses.replace(HASTILY_SRAM, adc_bits=2)
    em = emulate(model, "hastily")
    with torch.no_grad():
        before = em(x)
        for gemm in em[0].gemms:
            gemm.crossbar = narrow
        assert torch.equal(em(x), emulate(model, "hastily", crossbar=narrow)(x))
        assert not torch.equal(em(x), before)


class NamedConvs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.attention = nn.Sequential(nn.Conv2d(4, 6, 3))  # a conv inside a module named "attention"
        self.keypoint_conv = nn.Conv2d(6, 6, 1)  # "key" is a substring of the name, nothing more
        self.body = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        return self.body(self.keypoint_conv(self.attention(x)))


def test_atleus_convolutions_get_ffn_weight_bits_whatever_their_name():
    em = emulate(NamedConvs(), "atleus", quant="M8F4")  # 8-bit attention projections, 4-bit FFN
    bits = {name: m.gemms[0].wq.bits for name, m in em.named_modules() if isinstance(m, CrossbarConv)}
    assert bits == {"attention.0": 4, "keypoint_conv": 4, "body": 4}
    assert em.emulation.details["layers"]["mha"] == 0


@pytest.mark.parametrize("name", ["2d-groups2", "1d-depthwise-reflect", "2d-circular-stride2"])
def test_hastily_calibrated_conv_uses_one_input_scale(name):
    model, x = make_case(name)
    em = emulate(model, "hastily", calibrate_with=[x])
    layer = em[0]
    # the observer sees the module's input: max |x| / 127 (reflect and circular padding repeat values of x)
    assert layer.input_scale == x.abs().max().item() / 127
    assert all(gemm.input_scale == layer.input_scale for gemm in layer.gemms)
    with torch.no_grad():
        y = em(x)
    quant = QuantConfig(8, 8, granularity="channel", input_granularity="tensor")
    assert torch.equal(y, crossbar_reference(model[0], x, quant, HASTILY_SRAM, layer, layer.input_scale))
    # a half-size input keeps the calibrated scale: not the same as the dynamic per-row result
    with torch.no_grad():
        assert not torch.equal(em(x / 2), emulate(model, "hastily")(x / 2))


@pytest.mark.parametrize("target", ["hastily", "atleus"])
def test_crossbar_conv_input_gradient_is_the_dequantized_convolutions(target):
    model, x = make_case("2d-groups2")
    em = emulate(model, target)
    layer = em[0]
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad_out = torch.randn(2, 6, 7, 9, generator=torch.Generator().manual_seed(8))
    (em(x1) * grad_out).sum().backward()
    (F.conv2d(x2, layer.weight, layer.bias, 1, 1, 1, 2) * grad_out).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    assert not torch.equal(layer.weight, model[0].weight)  # dequantized: not the float weight
    assert not layer.weight.requires_grad  # crossbar weights are frozen


# ------------------------------------------------------------------ flexisaga


@pytest.mark.parametrize("accumulation", ["sequential", "fast"])
@pytest.mark.parametrize("name", CASES)
def test_sparse_conv_is_sparse_gemm_of_im2col(name, accumulation):
    model, x = make_case(name)
    em = emulate(model, "flexisaga", sparsity=0.5, tile=(4, 4), accumulation=accumulation)
    layer = em[0]
    assert isinstance(layer, SparseConv)
    with torch.no_grad():
        y = em(x)
    masked = torch.where(layer.mask, layer.weight.detach(), torch.zeros(()))
    depthwise = model[0].groups > 1 and model[0].groups == model[0].in_channels
    assert bool(layer.mask.all()) == depthwise  # depthwise convs stay dense, the others lose vectors
    config = FlexiSAGAConfig(rows=4, cols=4, sparsity=0.5, accumulation=accumulation)
    assert layer.config == config
    cols, spatial = reference_cols(model[0], x)
    ys = [
        sparse_gemm(cols[g].contiguous(), w.contiguous(), config)
        for g, w in enumerate(reference_weights(model[0], masked))
    ]
    want = add_bias(assemble(ys, x.shape[0], spatial), model[0].bias, len(spatial))
    if accumulation == "sequential" or model[0].groups == 1:
        assert torch.equal(y, want)
    else:  # "fast" is torch.matmul: one batched call against G calls, equal up to the summation order
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert em.emulation.counts["conv"] == 1


def vectors_by_hand(k, n, cols):
    """Row vectors (1 × C along N) of a (K, N) view: ceil(N / C) per row of K."""
    return k * -(-n // cols)


PRUNED_CONVS = [
    # (conv, K = C_in/G · kh · kw, N = C_out); tile (4, 4): vectors_total = K · ceil(N / 4)
    (lambda: nn.Conv2d(3, 8, 3), 27, 8),  # 27 · 2 = 54 vectors, 27 pruned
    (lambda: nn.Conv2d(8, 6, 1), 8, 6),  # 8 · 2 = 16, 8 pruned
    (lambda: nn.Conv2d(6, 10, 3, groups=2), 27, 10),  # 27 · 3 = 81, floor(40.5) = 40 pruned
    (lambda: nn.Conv2d(4, 5, (2, 3), stride=2, padding="valid"), 24, 5),  # 24 · 2 = 48, 24 pruned
    (lambda: nn.Conv1d(5, 7, 3, padding=1), 15, 7),  # 15 · 2 = 30, 15 pruned
    (lambda: nn.Conv1d(6, 9, 2, groups=3), 4, 9),  # 4 · 3 = 12, 6 pruned
]


@pytest.mark.parametrize("index", range(len(PRUNED_CONVS)))
def test_flexisaga_prunes_conv_vectors_of_its_gemm_view(index):
    make, k, n = PRUNED_CONVS[index]
    torch.manual_seed(10 + index)
    model = nn.Sequential(make())
    em = emulate(model, "flexisaga", sparsity=0.5, tile=(4, 4), accumulation="fast")
    report = em.emulation.details["sparsity"]
    assert set(report) == {"0"}
    r = report["0"]
    total = vectors_by_hand(k, n, 4)
    assert (r.shape, r.vector, r.vectors_total, r.vectors_pruned) == ((k, n), "row", total, total // 2)
    # the mask: the lowest-L2 row vectors (1 × 4 along N) of the view weight.reshape(C_out, K).T are gone
    view = model[0].weight.detach().double().reshape(n, k).T  # (K, N)
    padded = F.pad(view, (0, -n % 4))
    scores = padded.reshape(k, -1, 4).square().sum(-1).sqrt().flatten()  # row-major vector index
    pruned = set(torch.argsort(scores, stable=True)[: total // 2].tolist())
    mask_view = em[0].mask.reshape(n, k).T
    vector_kept = mask_view[:, ::4]  # (K, ceil(N / 4)): each vector's first element
    assert torch.equal(vector_kept.repeat_interleave(4, 1)[:, :n], mask_view)  # whole vectors only
    assert set((~vector_kept).flatten().nonzero().flatten().tolist()) == pruned
    assert r.element_sparsity == pytest.approx((~em[0].mask).sum().item() / em[0].mask.numel())
    assert bool((em[0].weight[~em[0].mask] == 0).all())
    assert torch.equal(em[0].weight[em[0].mask], model[0].weight[em[0].mask])


def test_flexisaga_leaves_depthwise_convs_dense_and_unreported():
    torch.manual_seed(20)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(), nn.Conv2d(8, 6, 1)
    )
    em = emulate(model, "flexisaga", sparsity=0.5, tile=(4, 4), accumulation="fast")
    report = em.emulation.details["sparsity"]
    assert set(report) == {"0", "4"}
    assert isinstance(em[2], SparseConv) and bool(em[2].mask.all())
    assert torch.equal(em[2].weight, model[2].weight)
    assert report["0"].vectors_pruned == 27 and report["4"].vectors_pruned == 8  # 54 // 2, 16 // 2
    with torch.no_grad():
        em(torch.randn(1, 3, 8, 8))
    assert em.emulation.counts["conv"] == 3


@pytest.mark.parametrize("accumulation", ["sequential", "fast"])
def test_sparse_conv_gradients_are_zero_where_masked_and_steps_keep_zeros(accumulation):
    torch.manual_seed(30)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, groups=2))
    em = emulate(model, "flexisaga", sparsity=0.5, tile=(4, 4), accumulation=accumulation)
    layers = [em[0], em[2]]
    assert all(isinstance(m, SparseConv) and not bool(m.mask.all()) for m in layers)
    optim = torch.optim.SGD(em.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    g = torch.Generator().manual_seed(31)
    for _ in range(2):
        optim.zero_grad()
        x = torch.randn(2, 4, 7, 7, generator=g, requires_grad=True)
        em(x).square().sum().backward()
        assert x.grad is not None and bool(x.grad.abs().sum() > 0)
        for m in layers:
            assert bool((m.weight.grad[~m.mask] == 0).all())
            assert bool((m.weight.grad[m.mask] != 0).any())
        optim.step()
        for m in layers:
            assert bool((m.weight[~m.mask] == 0).all())
    # the kept weights did move
    assert not torch.equal(em[0].weight[em[0].mask], model[0].weight[em[0].mask])


def test_sparse_conv_straight_through_weight_gradient_is_the_exact_convolutions():
    """Backward of the PE-order GEMM is the exact product's: compare with F.conv2d on the masked weight."""
    torch.manual_seed(32)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
    em = emulate(model, "flexisaga", sparsity=0.5, tile=(4, 4))
    x = torch.randn(2, 4, 7, 9, generator=torch.Generator().manual_seed(33))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    em(x1).sum().backward()
    layer = em[0]
    w = torch.where(layer.mask, layer.weight.detach(), torch.zeros(())).requires_grad_(True)
    F.conv2d(x2, w, layer.bias.detach(), 2, 1, 1, 2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, torch.where(layer.mask, w.grad, 0.0), rtol=1e-5, atol=1e-5)


def test_sparse_conv_rejects_a_bad_mask():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(ValueError, match="mask"):
        SparseConv(conv, torch.ones(6, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        SparseConv(conv, torch.ones(6, 36, dtype=torch.bool))  # the GEMM view's shape is not the weight's
    with pytest.raises(ValueError, match="mask"):
        SparseConv(conv, torch.ones(6, 4, 3, 3))  # not bool


# ------------------------------------------------------------------ every target: counts and attributes


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(40)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect"),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding="same", groups=8),
        )
        self.seq = nn.Conv1d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 5)

    def forward(self, x):
        h = self.features(x)  # (B, 8, 4, 4)
        h = self.seq(h.flatten(2))  # (B, 4, 16)
        return self.fc(h.flatten(1))


SWAPPED = {"hastily": "Conv -> CrossbarConv", "atleus": "Conv -> CrossbarConv", "flexisaga": "Conv -> SparseConv"}
REPLACEMENT = {"hastily": CrossbarConv, "atleus": CrossbarConv, "flexisaga": SparseConv}


@pytest.mark.parametrize("target", ["softex", "hastily", "atleus", "flexisaga"])
def test_counts_and_swaps(target):
    model = Mixed().eval()
    options = {"tile": (4, 4)} if target == "flexisaga" else {}
    em = emulate(model, target, **options)
    with torch.no_grad():
        y = em(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(41)))
    assert y.shape == (2, 5)
    counts = em.emulation.counts
    assert counts["conv"] == 3
    if target == "softex":  # the functional handler: nothing swapped, the Linear is a RedMulE product
        assert not any("Conv" in key for key in em.emulation.swapped)
        assert counts["matmul"] == 1 and counts["linear"] == 0
        assert all(type(m) in (nn.Conv1d, nn.Conv2d) for m in (em.features[0], em.features[2], em.seq))
    else:
        assert em.emulation.swapped[SWAPPED[target]] == 3
        assert counts["linear"] == 1  # the inner products of a conv replacement are not counted as Linears
        assert all(isinstance(m, REPLACEMENT[target]) for m in (em.features[0], em.features[2], em.seq))
    assert em.emulation.passes == 1


ATTRIBUTES = ("stride", "padding", "kernel_size", "groups", "in_channels", "out_channels", "dilation", "padding_mode")


@pytest.mark.parametrize("target", ["hastily", "atleus", "flexisaga"])
@pytest.mark.parametrize("name", CASES)
def test_replacements_expose_the_conv_attributes(target, name):
    model, _ = make_case(name)
    options = {"tile": (4, 4)} if target == "flexisaga" else {}
    em = emulate(model, target, **options)
    assert isinstance(em[0], REPLACEMENT[target])
    for attribute in ATTRIBUTES:
        assert getattr(em[0], attribute) == getattr(model[0], attribute), attribute


# ------------------------------------------------------------------ conv_as_gemm itself


@st.composite
def geometries(draw):
    dims = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1,) * dims if padding == "same" else tuple(draw(st.integers(1, 2)) for _ in range(dims))
    if padding == "int":
        padding = draw(st.integers(0, 2))
    elif padding == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    # spatial sizes large enough for the dilated kernel
    spatial = tuple(d * (k - 1) + 1 + draw(st.integers(0, 3)) for k, d in zip(kernel, dilation))
    batch = draw(st.sampled_from([None, 1, 2]))  # None: unbatched
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return dims, groups, c_in, c_out, kernel, dilation, padding, stride, spatial, batch, bias, seed


def exact_gemm(cols, w, b):
    y = cols.double() @ w.double()
    return y if b is None else y + b.double()


@settings(max_examples=80)
@given(geometries())
def test_conv_as_gemm_with_an_exact_product_is_the_convolution(geometry):
    dims, groups, c_in, c_out, kernel, dilation, padding, stride, spatial, batch, bias, seed = geometry
    g = torch.Generator().manual_seed(seed)
    shape = (c_in, *spatial) if batch is None else (batch, c_in, *spatial)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    conv = F.conv1d if dims == 1 else F.conv2d
    want = conv(x, weight, b, stride, padding, dilation, groups)
    got = conv_as_gemm(x, weight, b, ConvGeometry.of(dims, stride, padding, dilation, groups), exact_gemm)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ MobileNetV2


@pytest.fixture(scope="module")
def mobilenet():
    transformers = pytest.importorskip("transformers")
    config = transformers.MobileNetV2Config(num_labels=10, image_size=32, depth_multiplier=0.35)
    torch.manual_seed(0)
    return transformers.MobileNetV2ForImageClassification(config).eval()


def test_mobilenet_v2_flexisaga_prunes_every_dense_conv_and_keeps_depthwise(mobilenet):
    convs = {name: m for name, m in mobilenet.named_modules() if type(m) is nn.Conv2d}
    dense = {name: m for name, m in convs.items() if m.groups == 1}
    depthwise = {name: m for name, m in convs.items() if m.groups == m.in_channels and m.groups > 1}
    assert len(depthwise) == 17 and len(dense) + len(depthwise) == len(convs)
    em = emulate(mobilenet, "flexisaga", sparsity=0.5, accumulation="fast")
    report = em.emulation.details["sparsity"]
    assert set(report) == set(dense)
    for name, conv in dense.items():
        k, n = conv.in_channels * math.prod(conv.kernel_size), conv.out_channels
        total = vectors_by_hand(k, n, 16)  # default 16 × 16 tile: row vectors of 1 × 16 along N
        assert (report[name].vectors_total, report[name].vectors_pruned) == (total, math.floor(0.5 * total)), name
        assert isinstance(em.get_submodule(name), SparseConv)
    for name, conv in depthwise.items():
        layer = em.get_submodule(name)
        assert isinstance(layer, SparseConv) and bool(layer.mask.all())
        assert torch.equal(layer.weight, conv.weight)
    assert type(em.classifier) is nn.Linear
    assert em.emulation.swapped["Conv -> SparseConv"] == len(convs)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = em(x).logits
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())
    assert em.emulation.counts["conv"] == len(convs)


def test_mobilenet_v2_sparsity_zero_is_the_dense_model_up_to_rounding(mobilenet):
    em = emulate(mobilenet, "flexisaga", sparsity=0.0, accumulation="fast")
    assert all(r.vectors_pruned == 0 for r in em.emulation.details["sparsity"].values())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(em(x).logits, mobilenet(x).logits, rtol=1e-4, atol=1e-5)
